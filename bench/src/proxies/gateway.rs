//! The gateway under test: `gateway run` with its defaults, only the dataplane chosen. It
//! binds port 0 itself and prints `gateway ready listen=.. admin=.. dataplane=..` once it
//! serves; that line is read from a pipe that a thread keeps draining into the log file, so
//! the gateway never blocks on a full pipe.

use std::{
    fs::OpenOptions,
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::{process::Command, sync::oneshot};

use super::{
    child::{Stdout, Supervised},
    probe, program, ProxyConfig, Started,
};

/// How long the gateway may take to print its ready line (it loads and self-tests eBPF).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Prefix of the line the gateway prints on stdout once it serves.
const READY_PREFIX: &str = "gateway ready ";

/// SIGTERM lets open tunnels drain for this long; the bench stops it when it is done with
/// it, so there is nothing worth waiting for.
const SHUTDOWN_DRAIN_SECS: u64 = 1;

/// How tunnels are carried (`--dataplane`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    Ebpf,
    Userspace,
}

impl Dataplane {
    /// The `--dataplane` argument, which is also what the ready line reports.
    fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Userspace => "userspace",
        }
    }
}

pub async fn start(cfg: &ProxyConfig<'_>, dataplane: Dataplane) -> anyhow::Result<Started> {
    let version = program::output(cfg.gateway_bin, &["--version"])
        .await?
        .trim()
        .to_owned();
    // The defaults that shape a spliced tunnel, as this binary states them: the report must
    // not repeat what an older version defaulted to.
    let help = program::output(cfg.gateway_bin, &["run", "--help"]).await?;
    let defaults = SPLICE_FLAGS
        .iter()
        .map(|flag| format!("{flag} {}", default_of(&help, flag).unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ");
    let name = match dataplane {
        Dataplane::Ebpf => "gateway-ebpf",
        Dataplane::Userspace => "gateway-userspace",
    };
    let log = cfg.work_dir.join(format!("{name}.log"));
    let (stdout_reader, stdout_writer) = std::io::pipe().context("create the stdout pipe")?;

    let mut command = Command::new(cfg.gateway_bin);
    command
        .args(["run", "--listen", "127.0.0.1:0", "--backend"])
        .arg(cfg.backend.to_string())
        .args(["--dataplane", dataplane.as_str()])
        .args(["--admin", "127.0.0.1:0", "--log-level", "warn"])
        // nginx and HAProxy probe nothing here either; the bench backend answers only
        // upgrades.
        .args(["--default-probes", "false"])
        // Every load comes from 127.0.0.1, and nginx and HAProxy run without per-client
        // limits here too.
        .args([
            "--max-connections-per-ip",
            "0",
            "--upgrades-per-ip-per-sec",
            "0",
        ])
        .args(["--shutdown-drain-secs", &SHUTDOWN_DRAIN_SECS.to_string()])
        .args(cfg.gateway_args)
        .env("NO_COLOR", "1")
        .stdout(stdout_writer);
    let mut child = Supervised::spawn(name, command, Stdout::AsConfigured, &log, &[])?;
    let ready_line = drain_stdout(stdout_reader, &log)?;

    let line = tokio::select! {
        line = tokio::time::timeout(READY_TIMEOUT, ready_line) => match line {
            Ok(Ok(line)) => line,
            // The drain thread saw EOF: the gateway is exiting; report how it ended.
            Ok(Err(_closed)) => {
                let status = child.exited().await?;
                return Err(child.died(status, "before it was ready"));
            }
            Err(_elapsed) => bail!(
                "no ready line within {READY_TIMEOUT:?}; log tail:\n{}",
                child.log_tail()
            ),
        },
        status = child.exited() => return Err(child.died(status?, "before it was ready")),
    };
    let ready = ReadyLine::parse(&line)
        .with_context(|| format!("bad ready line {line:?}; log tail:\n{}", child.log_tail()))?;
    if ready.dataplane != dataplane.as_str() {
        bail!(
            "asked for --dataplane {}, the gateway reports dataplane={}",
            dataplane.as_str(),
            ready.dataplane
        );
    }
    probe::wait_forwarding(&mut child, ready.listen).await?;
    let extra = if cfg.gateway_args.is_empty() {
        String::new()
    } else {
        format!(", extra arguments: {}", cfg.gateway_args.join(" "))
    };
    Ok(Started {
        child,
        addr: ready.listen,
        version,
        settings: format!(
            "--dataplane {} (confirmed by its ready line), defaults otherwise ({defaults}), \
             --log-level warn, admin listener on, --shutdown-drain-secs {SHUTDOWN_DRAIN_SECS}{extra}",
            dataplane.as_str()
        ),
    })
}

/// Copies the gateway's stdout into `log` on a thread of its own, for as long as the
/// gateway runs; the returned receiver gets the ready line (or an error at EOF without one).
fn drain_stdout(
    stdout: std::io::PipeReader,
    log: &std::path::Path,
) -> anyhow::Result<oneshot::Receiver<String>> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("gateway-stdout".to_owned())
        .spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Losing a log line is better than blocking the gateway on its stdout.
                let _ = writeln!(file, "{line}");
                if line.starts_with(READY_PREFIX) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        })
        .context("spawn the thread draining the gateway's stdout")?;
    Ok(ready_rx)
}

/// The fields of `gateway ready listen=http://A admin=http://B|- dataplane=D` the bench uses.
struct ReadyLine {
    listen: SocketAddr,
    dataplane: String,
}

impl ReadyLine {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let fields = line
            .strip_prefix(READY_PREFIX)
            .context("no `gateway ready` prefix")?;
        let field = |name: &str| {
            fields
                .split_whitespace()
                .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no {name}= field"))
        };
        // One URL per listener, comma-separated; the bench starts one.
        let listen = field("listen")?.split(',').next().unwrap_or_default();
        let listen = listen
            .strip_prefix("http://")
            .unwrap_or(listen)
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("bad listen address {listen:?}"))?;
        Ok(Self {
            listen,
            dataplane: field("dataplane")?.to_owned(),
        })
    }
}

/// The flags whose defaults the report names for the gateway's paths.
const SPLICE_FLAGS: [&str; 5] = [
    "--max-tunnel-backlog-bytes",
    "--tunnel-sndbuf-bytes",
    "--spliced-backlog-pool-bytes",
    "--splice-after-bytes",
    "--splice-after-ms",
];

/// The `[default: X]` that `gateway run --help` gives for `flag`.
fn default_of<'h>(help: &'h str, flag: &str) -> Option<&'h str> {
    let from = help.find(&format!("{flag} <"))?;
    let rest = &help[from..];
    // The flag's own text ends where the next flag starts.
    let end = rest[flag.len()..]
        .find("\n      -")
        .map_or(rest.len(), |at| at + flag.len());
    let text = &rest[..end];
    let start = text.find("[default: ")? + "[default: ".len();
    text[start..].split(']').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_read_from_the_help_text() {
        let help = "      --max-tunnel-backlog-bytes <BYTES>\n          Most bytes. [default: 4194304]\n\n      \
                    --tunnel-sndbuf-bytes <BYTES>\n          Send buffer.\n\n      \
                    --other <X>\n          [default: 7]\n";
        assert_eq!(
            default_of(help, "--max-tunnel-backlog-bytes"),
            Some("4194304")
        );
        assert_eq!(
            default_of(help, "--tunnel-sndbuf-bytes"),
            None,
            "not the next flag's"
        );
        assert_eq!(default_of(help, "--missing"), None);
    }

    #[test]
    fn parses_the_ready_line() {
        let line = "gateway ready listen=http://127.0.0.1:41000 admin=http://127.0.0.1:41001 \
                    dataplane=ebpf";
        let ready = ReadyLine::parse(line).expect("a valid ready line");
        assert_eq!(
            ready.listen,
            "127.0.0.1:41000".parse::<SocketAddr>().expect("an address")
        );
        assert_eq!(ready.dataplane, "ebpf");
        assert!(ReadyLine::parse("gateway starting").is_err());
    }
}

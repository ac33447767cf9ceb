//! HAProxy (the Debian package) in HTTP mode, one process with a thread per CPU, WebSocket
//! tunnels after the upgrade; optionally with `option splice-auto`, which moves tunnel
//! bytes through pipes with `splice()` instead of copying them through its buffers.
//! It listens on a socket inherited as `bind fd@N`.

use std::{fmt::Write as _, fs};

use anyhow::{ensure, Context as _};
use tokio::process::Command;

use super::{
    child::{Stdout, Supervised},
    listener::{InheritedListener, BACKLOG},
    probe, program, ProxyConfig, Started,
};
use crate::pin;

/// Whether HAProxy splices tunnel bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Splice {
    Off,
    Auto,
}

/// Connections beyond one per tunnel: probes, handshakes in flight.
const CONNECTION_SLACK: usize = 256;

/// Descriptors HAProxy needs besides connections, pipes and the per-thread ones: the
/// listener, log and config files (17 in all measured with 2 threads), with room to spare.
const FIXED_FDS: u64 = 32;

/// Descriptors per thread: an epoll fd and a wake-up pipe.
const FDS_PER_THREAD: u64 = 3;

/// Pipes kept for splicing even when the descriptor limit is tight. HAProxy's default is
/// `maxconn / 4`; a pipe only serves a tunnel while bytes are in flight, and without one
/// HAProxy copies through its buffer instead, so fewer pipes never fail a connection.
const MIN_PIPES: u64 = 128;

pub async fn start(cfg: &ProxyConfig<'_>, nofile: u64, splice: Splice) -> anyhow::Result<Started> {
    let haproxy = program::find("haproxy")?;
    let version_text = program::output(&haproxy, &["-v"]).await?;
    let version = version_text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("HAProxy version "))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or_else(
            || version_text.trim().to_owned(),
            |number| format!("HAProxy {number}"),
        );
    let features = program::output(&haproxy, &["-vv"]).await?;
    // "default settings : bufsize = 16384, maxrewrite = 1024, ..."
    let bufsize = features
        .split("bufsize = ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .map_or_else(|| "unknown".to_owned(), str::to_owned);
    if splice == Splice::Auto {
        ensure!(
            features.contains("+LINUX_SPLICE"),
            "{} is built without splice support (no +LINUX_SPLICE in `haproxy -vv`)",
            haproxy.display()
        );
    }

    let label = match splice {
        Splice::Off => "haproxy",
        Splice::Auto => "haproxy-splice",
    };
    let listener = InheritedListener::bind()?;
    let conf = Conf::new(cfg, nofile, splice, bufsize);
    let conf_path = cfg.work_dir.join(format!("{label}.cfg"));
    fs::write(&conf_path, conf.render(&listener))
        .with_context(|| format!("write {}", conf_path.display()))?;

    let mut command = Command::new(&haproxy);
    // -db: stay in the foreground, one process; SIGTERM stops it.
    command.arg("-f").arg(&conf_path).arg("-db");
    listener.pass_to(&mut command);
    let mut child = Supervised::spawn(
        label,
        command,
        Stdout::Log,
        &cfg.work_dir.join(format!("{label}.log")),
        &[],
    )?;
    let addr = listener.addr();
    drop(listener);
    probe::wait_forwarding(&mut child, addr).await?;
    Ok(Started {
        child,
        addr,
        version,
        settings: conf.settings(),
    })
}

/// The numbers that go into `haproxy.cfg`.
struct Conf {
    threads: usize,
    maxconn: u64,
    /// Why `maxconn` is below what `max_tunnels` asked for, if it is.
    maxconn_capped: Option<String>,
    /// `Some` with splicing: the pipes HAProxy may use.
    maxpipes: Option<u64>,
    /// The built-in `tune.bufsize`, from `haproxy -vv`, for the report.
    bufsize: String,
    backend: std::net::SocketAddr,
}

impl Conf {
    /// HAProxy refuses to start if `RLIMIT_NOFILE` cannot cover two descriptors per
    /// connection plus two per pipe, so both are sized to fit the hard limit: connections
    /// first (a refused connection fails a workload), pipes from what is left.
    fn new(cfg: &ProxyConfig<'_>, nofile: u64, splice: Splice, bufsize: String) -> Self {
        let threads = pin::all_cpus().len();
        let wanted = u64::try_from(cfg.max_tunnels + CONNECTION_SLACK).unwrap_or(u64::MAX);
        let budget = nofile.saturating_sub(FIXED_FDS + FDS_PER_THREAD * threads as u64);
        let reserved_for_pipes = match splice {
            Splice::Off => 0,
            Splice::Auto => 2 * MIN_PIPES,
        };
        let affordable = budget.saturating_sub(reserved_for_pipes) / 2;
        let maxconn = wanted.min(affordable);
        let maxconn_capped = (maxconn < wanted).then(|| {
            let pipes = match splice {
                Splice::Off => String::new(),
                Splice::Auto => format!(" after {MIN_PIPES} pipes for splicing"),
            };
            format!("wanted {wanted}; RLIMIT_NOFILE {nofile} at 2 fds per connection{pipes}")
        });
        let maxpipes = match splice {
            Splice::Off => None,
            Splice::Auto => Some((maxconn / 4).min(budget.saturating_sub(2 * maxconn) / 2)),
        };
        Self {
            threads,
            maxconn,
            maxconn_capped,
            maxpipes,
            bufsize,
            backend: cfg.backend,
        }
    }

    fn render(&self, listener: &InheritedListener) -> String {
        let Self {
            threads,
            maxconn,
            backend,
            ..
        } = self;
        let fd = listener.fd();
        let mut global = format!("    nbthread {threads}\n    maxconn {maxconn}\n");
        let mut defaults = String::new();
        if let Some(maxpipes) = self.maxpipes {
            let _ = writeln!(global, "    maxpipes {maxpipes}");
            let _ = writeln!(defaults, "    option splice-auto");
        }
        format!(
            "# Generated by gateway-bench for the HAProxy paths.
global
{global}
defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option http-keep-alive
{defaults}
frontend bench
    # Inherited from gateway-bench, already bound and listening.
    bind fd@{fd} backlog {BACKLOG}
    default_backend backend

backend backend
    server backend {backend}
"
        )
    }

    /// One line for the report.
    fn settings(&self) -> String {
        let mut line = format!(
            "mode http, nbthread {}, maxconn {}",
            self.threads, self.maxconn
        );
        if let Some(why) = &self.maxconn_capped {
            let _ = write!(line, " ({why})");
        }
        match self.maxpipes {
            Some(pipes) => {
                let _ = write!(
                    line,
                    ", option splice-auto (LINUX_SPLICE built in), maxpipes {pipes}"
                );
                if pipes < self.maxconn / 4 {
                    let _ = write!(
                        line,
                        " (the default, maxconn/4, does not fit RLIMIT_NOFILE; tunnels \
                         without a pipe are copied through buffers)"
                    );
                }
            }
            None => line.push_str(", no splice"),
        }
        let _ = write!(
            line,
            ", option http-keep-alive, timeout connect 5s / client 60s / server 60s / tunnel 1h, \
             default buffers (tune.bufsize {}), no logging",
            self.bufsize
        );
        let _ = write!(line, ", inherited listening socket (backlog {BACKLOG})");
        line
    }
}

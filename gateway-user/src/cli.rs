//! Command-line interface.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand};

use crate::config::{DataplaneMode, LogFormat, Overrides, Sources};

/// eBPF-accelerated HTTP and WebSocket gateway. Plaintext WebSocket tunnels are spliced in
/// the kernel (sockmap + sk_skb verdict) after the backend answers 101 Switching Protocols.
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground.
    // Boxed: its many flags make it far larger than the other commands.
    Run(Box<RunArgs>),
    /// Check a configuration file without binding anything: lists every problem (file,
    /// line, key, what is wrong, how to fix it) and exits with 64, or prints a one-line
    /// summary and exits with 0.
    Check(CheckArgs),
    /// Convert an Azure Application Gateway's JSON into a configuration file.
    ///
    /// The input is an ARM template, `az network application-gateway show` output, or a
    /// fragment of its collections. What cannot be carried over is listed on stderr and at
    /// the top of the file; the result is then checked like `gateway check`. Exit codes: 0
    /// written and valid; 2 written, but the check found problems (listed; certificate
    /// placeholders always are one); 64 the input is not usable JSON of an application
    /// gateway (nothing written); 73 the output cannot be written.
    ImportAzure(ImportAzureArgs),
}

/// The address `import-azure` binds listeners to unless told otherwise.
pub const IMPORT_BIND_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[derive(Debug, Args)]
pub struct ImportAzureArgs {
    /// The Azure JSON file.
    #[arg(value_name = "FILE.json")]
    pub input: PathBuf,

    /// Where to write the configuration; default: stdout. An existing file is replaced.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The address every listener binds, with its Azure frontend port (Azure listens on its
    /// frontend IPs, which this host does not have).
    #[arg(long, value_name = "IP", default_value_t = IMPORT_BIND_IP)]
    pub bind_ip: IpAddr,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file (TOML; examples/gateway.toml shows every key).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML; examples/gateway.toml shows every key). An invalid file
    /// is refused before anything is bound: every problem is listed, exit code 64.
    /// Flags given with it: --listen/--backend add listeners (see there); the [global]
    /// flags (--dataplane, --admin, --log-level, --log-format, --handshake-timeout-secs,
    /// --shutdown-drain-secs, --tunnel-sndbuf-bytes, --spliced-backlog-pool-bytes,
    /// --max-connections, --max-connections-per-ip, --upgrades-per-ip-per-sec,
    /// --upgrade-burst-per-ip, --listen-backlog, --response-send-timeout-secs,
    /// --request-body-timeout-secs, --request-buffer-bytes) override the file; the tunnel flags
    /// (--tunnel-idle-timeout-secs, --tunnel-max-lifetime-secs, --max-tunnel-backlog-bytes)
    /// are the default for every [[backend_settings]] that does not set the key itself.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept clients on (HTTP/1.1; WebSocket upgrades need no switch).
    /// Repeat for several listeners. Port 0 picks a free port; the ready line says which.
    /// Required without --config; with it, each --listen adds an http listener
    /// (`cli-listen-N`) with a basic rule to the --backend pool, next to the file's.
    #[arg(
        long = "listen",
        value_name = "ADDR",
        required_unless_present = "config",
        requires = "backend"
    )]
    pub listen: Vec<SocketAddr>,

    /// Backend server (IP:PORT). Repeat for several; requests and tunnels are spread over
    /// them round-robin. Required with --listen: together they form one pool
    /// (`cli-backends`) with default backend settings (`cli-settings`).
    #[arg(
        long = "backend",
        value_name = "ADDR",
        required_unless_present = "config",
        requires = "listen"
    )]
    pub backend: Vec<SocketAddr>,

    /// Admin listener: /metrics, /backends, /tunnels, POST /reload. A port alone binds
    /// loopback (`--admin 9090` is 127.0.0.1:9090); IP:PORT binds there (keep it on
    /// loopback: it can reload the configuration). None without it (or [global] admin).
    #[arg(long, value_name = "PORT|ADDR", value_parser = crate::config::admin_addr)]
    pub admin: Option<SocketAddr>,

    /// How WebSocket tunnels are carried: `ebpf` splices them in the kernel and refuses to
    /// start if the eBPF program cannot be loaded; `userspace` relays them in the gateway;
    /// `auto` tries eBPF and falls back to userspace, logging why. [default: auto]
    #[arg(long, value_enum, value_name = "MODE")]
    pub dataplane: Option<DataplaneMode>,

    /// Close a WebSocket tunnel after this many seconds without a byte in either
    /// direction. For spliced tunnels idleness is read from timestamps the eBPF program
    /// keeps; userspace never touches the data to know. [default: 300]
    #[arg(long, value_name = "SECS")]
    pub tunnel_idle_timeout_secs: Option<u64>,

    /// Close a WebSocket tunnel this many seconds after it opened, busy or not.
    /// 0 means no limit. [default: 0]
    #[arg(long, value_name = "SECS")]
    pub tunnel_max_lifetime_secs: Option<u64>,

    /// Time allowed for the handshake: the client to send its request head, and the
    /// backend to connect and answer it. A backend that is too slow gets the client a 504.
    /// [default: 30]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout_secs: Option<u64>,

    /// Most bytes the kernel may hold for one direction of a spliced tunnel while the
    /// receiving side is slower than the sending one; past it the sender is slowed down
    /// by TCP flow control. [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub max_tunnel_backlog_bytes: Option<u64>,

    /// A plaintext WebSocket tunnel starts on the userspace relay and is spliced in the
    /// kernel once it has moved this many bytes (both ways together) or lived
    /// --splice-after-ms, whichever comes first: short tunnels never pay for the splice's
    /// setup. 0 splices every tunnel at once. [default: 262144]
    #[arg(long, value_name = "BYTES")]
    pub splice_after_bytes: Option<u64>,

    /// See --splice-after-bytes. 0 splices every tunnel at once. [default: 20]
    #[arg(long, value_name = "MS")]
    pub splice_after_ms: Option<u64>,

    /// Send buffer of both sockets of a spliced tunnel (SO_SNDBUFFORCE; SO_SNDBUF, capped by
    /// net.core.wmem_max, without CAP_NET_ADMIN). It must hold what the kernel's redirect
    /// worker sends in one jiffy, or a fast tunnel stalls (docs/dataplane.md). 0 keeps the
    /// kernel's autotuning, and lets the gateway drop CAP_NET_ADMIN. [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub tunnel_sndbuf_bytes: Option<u32>,

    /// Kernel memory all spliced flows together may borrow beyond their own
    /// --max-tunnel-backlog-bytes. A flow whose receiver keeps up but pauses anyway (the
    /// kernel's redirect worker fell behind a faster sender) grows its budget fourfold at each
    /// such pause, up to 64 MiB, from this pool, unless the tunnel's other direction is busy
    /// too; a slow receiver gets its base budget back. It also covers what a peer that reads
    /// nothing keeps sending past 16 MiB per direction (bytes no socket accounts for): a
    /// tunnel it cannot cover is reset. 0: no flow grows, and no peer may owe past 16 MiB.
    /// [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub spliced_backlog_pool_bytes: Option<u64>,

    /// Probe every pool/settings pair that names no `probe` with Azure's default probe
    /// (`GET /` on the settings' protocol and port every 30 s, 30 s timeout, out after 3
    /// failures in a row, healthy on 200-399). `false`: only configured probes run.
    /// [default: true]
    #[arg(long, value_name = "BOOL")]
    pub default_probes: Option<bool>,

    /// On SIGTERM/SIGINT: stop accepting at once, let open tunnels and requests finish for
    /// this many seconds, then close what is left. [default: 30]
    #[arg(long, value_name = "SECS")]
    pub shutdown_drain_secs: Option<u64>,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info`, `gateway=debug`).
    /// RUST_LOG, when set, takes precedence. [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log lines as text or as one JSON object per line. [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Client connections open at once across every listener, WebSocket tunnels included
    /// (the admin listener's are not counted). Past it a new connection gets `503` with
    /// `Retry-After` and is closed (on https, closed at once). [default: (RLIMIT_NOFILE -
    /// 128) / 2, after raising the soft descriptor limit to the hard one]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u64>,

    /// Client connections open at once from one client address (IPv4, or IPv6 by /64),
    /// tunnels included; past it a `503` as for --max-connections. 0: no limit.
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u64>,

    /// WebSocket upgrades one client address (IPv4, or IPv6 by /64) may start per second,
    /// sustained; past it the upgrade gets `429` with `Retry-After`. 0: no limit.
    /// [default: 20]
    #[arg(long, value_name = "N")]
    pub upgrades_per_ip_per_sec: Option<u32>,

    /// Upgrades one client address may start at once before --upgrades-per-ip-per-sec
    /// applies (the token bucket's size). [default: 200]
    #[arg(long, value_name = "N")]
    pub upgrade_burst_per_ip: Option<u32>,

    /// Accept queue (listen backlog) of every client listener; the kernel caps it at
    /// net.core.somaxconn. [default: net.core.somaxconn]
    #[arg(long, value_name = "N")]
    pub listen_backlog: Option<u32>,
    /// Close a client connection when a write of its answer makes no progress for this
    /// long (the client stopped reading): the time between two writes that move bytes, not
    /// the whole answer, as nginx's send_timeout. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub response_send_timeout_secs: Option<u64>,

    /// Answer 408 and close when a request body brings no byte for this long (the time
    /// between two reads, as nginx's client_body_timeout). [default: 60]
    #[arg(long, value_name = "SECS")]
    pub request_body_timeout_secs: Option<u64>,

    /// Read a request body into memory up to this many bytes before choosing and
    /// connecting a backend, so a slow upload holds no backend connection; a larger body is
    /// streamed once this much has come. 0: stream every body at once. [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub request_buffer_bytes: Option<u64>,

    /// A name the admin listener answers to (its `Host`) besides its own address and, on
    /// loopback, `localhost`; repeat for several. Replaces [global] admin_host_names.
    /// Requests for any other host get 403 (DNS rebinding). [default: none]
    #[arg(long = "admin-host-name", value_name = "NAME")]
    pub admin_host_names: Vec<String>,

    /// File holding the bearer token every admin request must send
    /// (`Authorization: Bearer TOKEN`), read at start and at each reload; without it no
    /// token is asked for. Replaces [global] admin_token_file. [default: none]
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

impl RunArgs {
    /// The file, the shortcut and the overriding flags, for `config::load`.
    pub fn sources(&self) -> Sources {
        Sources {
            file: self.config.clone(),
            listen: self.listen.clone(),
            backends: self.backend.clone(),
            overrides: Overrides {
                dataplane: self.dataplane,
                admin: self.admin,
                log_level: self.log_level.clone(),
                log_format: self.log_format,
                shutdown_drain_secs: self.shutdown_drain_secs,
                handshake_timeout_secs: self.handshake_timeout_secs,
                tunnel_sndbuf_bytes: self.tunnel_sndbuf_bytes,
                spliced_backlog_pool_bytes: self.spliced_backlog_pool_bytes,
                default_probes: self.default_probes,
                tunnel_idle_timeout_secs: self.tunnel_idle_timeout_secs,
                tunnel_max_lifetime_secs: self.tunnel_max_lifetime_secs,
                max_tunnel_backlog_bytes: self.max_tunnel_backlog_bytes,
                splice_after_bytes: self.splice_after_bytes,
                splice_after_ms: self.splice_after_ms,
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                upgrades_per_ip_per_sec: self.upgrades_per_ip_per_sec,
                upgrade_burst_per_ip: self.upgrade_burst_per_ip,
                listen_backlog: self.listen_backlog,
                response_send_timeout_secs: self.response_send_timeout_secs,
                request_body_timeout_secs: self.request_body_timeout_secs,
                request_buffer_bytes: self.request_buffer_bytes,
                admin_host_names: self.admin_host_names.clone(),
                admin_token_file: self.admin_token_file.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::defaults;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["gateway", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn listen_and_backend_are_required_without_config_only() {
        assert!(run_args(&[]).is_err());
        assert!(run_args(&["--listen", "127.0.0.1:0"]).is_err());
        assert!(run_args(&["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1"]).is_ok());
        assert!(run_args(&["--config", "gw.toml"]).is_ok());
        // With a file they still come in pairs.
        assert!(run_args(&["--config", "gw.toml", "--backend", "127.0.0.1:1"]).is_err());
    }

    #[test]
    fn import_azure_takes_a_file_an_output_and_a_bind_ip() {
        let cli = Cli::try_parse_from(["gateway", "import-azure", "gw.json"]).expect("parses");
        let Command::ImportAzure(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.input, PathBuf::from("gw.json"));
        assert_eq!((args.output, args.bind_ip), (None, IMPORT_BIND_IP));
        let cli = Cli::try_parse_from([
            "gateway",
            "import-azure",
            "gw.json",
            "--output",
            "gw.toml",
            "--bind-ip",
            "127.0.0.1",
        ])
        .expect("parses");
        let Command::ImportAzure(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.output, Some(PathBuf::from("gw.toml")));
        assert_eq!(args.bind_ip.to_string(), "127.0.0.1");
        assert!(Cli::try_parse_from(["gateway", "import-azure"]).is_err());
    }

    #[test]
    fn help_quotes_the_defaults() {
        let help = Cli::try_parse_from(["gateway", "run", "--help"])
            .expect_err("--help stops parsing")
            .to_string();
        for default in [
            defaults::TUNNEL_IDLE_TIMEOUT_SECS.to_string(),
            defaults::MAX_TUNNEL_BACKLOG_BYTES.to_string(),
            defaults::MAX_CONNECTIONS_PER_IP.to_string(),
            defaults::UPGRADES_PER_IP_PER_SEC.to_string(),
            defaults::UPGRADE_BURST_PER_IP.to_string(),
            defaults::REQUEST_BUFFER_BYTES.to_string(),
        ] {
            assert!(help.contains(&format!("[default: {default}]")), "{default}");
        }
    }
}

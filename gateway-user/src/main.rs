//! `gateway`: parse flags, load the configuration, set up logging, run.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use gateway::{
    cli::{CheckArgs, Cli, Command, ImportAzureArgs, RunArgs},
    config::{self, plan, ConfigErrors, LogFormat, Sources},
    Trigger,
};
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used (sysexits' `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Cli { command } = Cli::parse();
    match command {
        Command::Check(args) => Ok(check(&args)),
        Command::ImportAzure(args) => Ok(import_azure(&args)),
        Command::Run(args) => run(*args).await,
    }
}

/// `gateway check`: every problem on stderr and exit 64, or a summary on stdout.
fn check(args: &CheckArgs) -> ExitCode {
    match config::load(&Sources::file(&args.config)) {
        Ok(config) => {
            println!("ok: {}", config.summary());
            for warning in plan::plan(&config).warnings {
                eprintln!("note: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report(&errors);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `gateway import-azure`: the conversion is `gateway-azure`'s; its exit code.
fn import_azure(args: &ImportAzureArgs) -> ExitCode {
    let options = gateway_azure::Options {
        bind_ip: args.bind_ip,
    };
    gateway_azure::run(&args.input, args.output.as_deref(), &options)
}

fn report(errors: &ConfigErrors) {
    for error in errors {
        eprintln!("{error}");
    }
    let n = errors.len();
    eprintln!(
        "{n} problem{} found in the configuration",
        if n == 1 { "" } else { "s" }
    );
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let sources = args.sources();
    let config = match config::load(&sources) {
        Ok(config) => config,
        Err(errors) => {
            report(&errors);
            eprintln!("gateway not started: nothing was bound");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    init_logging(&config.global.log_level, config.global.log_format)?;
    // `start` takes the configuration; the capability drop after it reads `[global]`.
    let global = config.global.clone();
    // Installed before the ready line: a signal sent right after it must find the
    // handler, not the default action (which kills the process, SIGHUP's too).
    let mut signals = Signals::new().context("cannot install SIGTERM/SIGINT/SIGHUP handlers")?;
    // Kept so a reload reads the same file with the same flags.
    let mut running = match gateway::start(config, sources).await {
        Ok(running) => running,
        // A certificate, key or trust store that cannot be used: a configuration problem,
        // found before anything was bound.
        Err(error) if error.is_configuration() => {
            eprintln!("{error}");
            eprintln!("gateway not started: nothing was bound");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
        Err(error) => return Err(error.into()),
    };
    // Loading eBPF and binding are done: keep only the capabilities serving still needs.
    gateway::privileges::drop_after_start(&global, &running.dataplane)
        .context("cannot drop the capabilities start-up needed; refusing to serve with them")?;
    tracing::info!(dataplane = %running.dataplane, "gateway started");
    println!("{}", running.ready_line());
    let reloader = running.reloader();
    let signal = loop {
        tokio::select! {
            () = running.wait() => return Ok(ExitCode::SUCCESS),
            signal = signals.next() => match signal {
                // In a task of its own, so SIGTERM is not held up by a reload (which logs
                // its outcome; reloads run one at a time).
                Signal::Hangup => {
                    let reloader = reloader.clone();
                    tokio::spawn(async move { reloader.reload(Trigger::Sighup).await });
                }
                Signal::Stop(name) => break name,
            },
        }
    };
    // The drain of the configuration served now: a reload may have changed it.
    let drain = running.shutdown_drain();
    tracing::info!(signal, drain_secs = drain.as_secs(), "shutting down");
    let shutdown = running.shutdown(drain);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = shutdown.as_mut() => break,
            signal = signals.next() => match signal {
                Signal::Hangup => tracing::info!("SIGHUP ignored: the gateway is shutting down"),
                Signal::Stop(name) => {
                    tracing::warn!(signal = name, "second signal during the drain; exiting now");
                    break;
                }
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::new(env),
        _ => EnvFilter::try_new(level).with_context(|| format!("invalid log level {level:?}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// SIGTERM and SIGINT, both meaning "shut down"; SIGHUP, "reload the configuration".
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM or SIGINT (named).
    Stop(&'static str),
    /// SIGHUP.
    Hangup,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received. Cancel-safe.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Hangup,
        }
    }
}

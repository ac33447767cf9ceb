//! `gateway`: parse flags, load the configuration, set up logging, run.

mod azure;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use gateway::{
    cli::{CheckArgs, Cli, Command, RunArgs},
    config::{self, ConfigErrors, LogFormat, Sources},
    plan,
};
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used (sysexits' `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Cli { command } = Cli::parse();
    match command {
        Command::Check(args) => Ok(check(&args)),
        Command::ImportAzure(args) => Ok(azure::run(&args)),
        Command::Run(args) => run(args).await,
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
    let drain = config.global.shutdown_drain;
    // Installed before the ready line: a signal sent right after it must find the
    // handler, not the default action (which kills the process).
    let mut signals = Signals::new().context("cannot install SIGTERM/SIGINT handlers")?;
    let mut running = match gateway::start(config).await {
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
    tracing::info!(dataplane = %running.dataplane, "gateway started");
    println!("{}", running.ready_line());
    tokio::select! {
        () = running.wait() => return Ok(ExitCode::SUCCESS),
        signal = signals.next() => {
            tracing::info!(signal, drain_secs = drain.as_secs(), "shutting down");
        }
    }
    tokio::select! {
        () = running.shutdown(drain) => {}
        signal = signals.next() => {
            tracing::warn!(signal, "second signal during the drain; exiting now");
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

/// SIGTERM and SIGINT, both meaning "shut down".
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

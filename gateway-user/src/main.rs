//! `gateway`: parse flags, set up logging, run.

use anyhow::Context as _;
use clap::Parser as _;
use gateway::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command } = Cli::parse();
    match command {
        Command::Run(args) => {
            init_logging(&args.log_level)?;
            let config = gateway::Config::from(args);
            let drain = config.shutdown_drain;
            // Installed before the ready line: a signal sent right after it must find the
            // handler, not the default action (which kills the process).
            let mut signals = Signals::new().context("cannot install SIGTERM/SIGINT handlers")?;
            let mut running = gateway::start(config).await?;
            tracing::info!(dataplane = %running.dataplane, "gateway started");
            println!("{}", running.ready_line());
            tokio::select! {
                () = running.wait() => return Ok(()),
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
            Ok(())
        }
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::new(env),
        _ => EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

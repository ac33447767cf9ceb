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
            let running = gateway::start(args.into()).await?;
            tracing::info!(dataplane = %running.dataplane, "gateway started");
            println!("{}", running.ready_line());
            tokio::select! {
                () = running.wait() => {}
                signal = shutdown_signal() => {
                    tracing::info!(signal, "shutting down");
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

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

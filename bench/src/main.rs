//! `gateway-bench`: measures the gateway against a direct connection, nginx and HAProxy in
//! one run on one machine, verifying every byte, and writes JSON, Markdown and plots.
//! `cargo xtask bench` builds everything in release mode and runs `gateway-bench run`.
mod backend;
mod cli;
mod load;
mod machine;
mod model;
mod payload;
mod pin;
mod procstat;
mod proxies;
mod report;
mod runner;
mod wire;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    match cli::Cli::parse().command {
        cli::Command::Run(args) => runner::run(&args),
        cli::Command::Backend(args) => backend::serve(&args),
    }
}

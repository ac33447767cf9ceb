//! `cargo xtask`: the developer entry points of this workspace. Every task runs `setup`
//! first, so on a fresh machine `cargo xtask run` or `cargo xtask test` is enough.
mod bench;
mod build;
mod cli;
mod demo;
mod fuzz;
mod lint;
mod privilege;
mod process;
mod readiness;
mod run;
mod setup;
mod test;
mod workspace;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> anyhow::Result<ExitCode> {
    match cli::Cli::parse().command {
        cli::Command::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        cli::Command::Build(args) => build::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Run(args) => run::run(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Lint => lint::run().map(|()| ExitCode::SUCCESS),
        cli::Command::Test(args) => test::run(&args),
        cli::Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Fuzz(args) => fuzz::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

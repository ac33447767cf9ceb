//! Command-line interface of `cargo xtask`.
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for the WebSocket gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install what is missing: nightly + rust-src, cargo-fuzz, LLVM 22 dev packages,
    /// bpf-linker 0.13.0.
    Setup,
    /// Run setup, then build the daemon (which embeds the eBPF object).
    Build(BuildArgs),
    /// Run setup, build in release mode, and start the gateway in front of a demo backend.
    Run(RunArgs),
    /// Run setup, then `cargo fmt --check` and clippy (all crates and targets, warnings
    /// denied): the gates CI runs before the tests.
    Lint,
    /// Run setup, build the daemon, and run every test of the workspace against it.
    Test(TestArgs),
    /// Run setup, build in release mode, and benchmark the gateway against a direct
    /// connection, nginx and HAProxy; writes bench/results/ (JSON, Markdown, SVG plots).
    Bench(BenchArgs),
    /// Run setup, build the fuzz targets of fuzz/ (cargo-fuzz, nightly) and run each (or
    /// one) for a while, growing its corpus in fuzz/corpus/TARGET; crashes go to
    /// fuzz/artifacts/TARGET.
    Fuzz(FuzzArgs),
}

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// One target (a file of fuzz/fuzz_targets/, without `.rs`); all of them if left out.
    pub target: Option<String>,
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 300)]
    pub secs: u64,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address the gateway listens on for clients.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Backend the gateway forwards to (default: the bundled demo backend).
    #[arg(long)]
    pub backend: Option<String>,
    /// Address of the gateway's admin endpoint (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: String,
    /// Dataplane to ask for: `ebpf`, `userspace` or `auto` (default: the gateway's default).
    #[arg(long)]
    pub dataplane: Option<String>,
    /// Extra arguments for `gateway run`; a flag given here wins over the one above.
    #[arg(last = true)]
    pub gateway_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A few minutes: smaller transfers, one round, 1 000 concurrent tunnels.
    #[arg(long)]
    pub quick: bool,
    /// Extra arguments for `gateway-bench run` (e.g. `--paths direct,gateway-ebpf`).
    #[arg(last = true)]
    pub bench_args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments_after_double_dash_are_passed_through() {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "-p", "xtask", "--", "--nocapture"])
            .expect("parse test arguments");
        let Command::Test(args) = cli.command else {
            panic!("expected the test command")
        };
        assert_eq!(args.cargo_args, ["-p", "xtask", "--", "--nocapture"]);
    }
}

//! `cargo xtask bench`: builds the daemon and the benchmark in release mode, then runs
//! `gateway-bench run`, which writes its report to `bench/results/`.
use anyhow::Context as _;

use crate::{
    build::{self, Profile},
    cli::BenchArgs,
    privilege, process, setup, workspace,
};

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        privilege::can_load_ebpf(),
        "the benchmark loads the gateway's eBPF program: run `cargo xtask bench` as root \
         (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN in the ambient set)"
    );
    setup::run_with_bench_peers()?;
    let gateway = build::gateway(Profile::Release)?;
    let mut build = workspace::cargo();
    build.args(["build", "--release", "--package", "gateway-bench"]);
    process::run("bench", &mut build)?;
    let bench = workspace::target_dir()
        .join("release")
        .join("gateway-bench");
    let mut cmd = std::process::Command::new(&bench);
    cmd.current_dir(workspace::root())
        .arg("run")
        .arg("--gateway")
        .arg(&gateway)
        .arg("--out")
        .arg(workspace::root().join("bench").join("results"));
    if args.quick {
        cmd.arg("--quick");
    }
    cmd.args(&args.bench_args);
    println!("bench: running {}", process::shell_line(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", bench.display()))?;
    anyhow::ensure!(status.success(), "gateway-bench failed: {status}");
    Ok(())
}

//! `cargo xtask test`: builds the daemon and runs every test of the workspace against it.
use std::{env, process::ExitCode};

use anyhow::Context as _;

use crate::{
    build::{self, Profile},
    cli::TestArgs,
    fuzz, privilege, process, setup, workspace,
};

/// Set to `1` by someone without BPF privileges; the eBPF tests then skip themselves.
const UNPRIVILEGED: &str = "GATEWAY_TEST_UNPRIVILEGED";

pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let unprivileged = env::var(UNPRIVILEGED).is_ok_and(|value| value == "1");
    if unprivileged {
        println!("test: ================================================================");
        println!("test: {UNPRIVILEGED}=1: the eBPF tests will be SKIPPED");
        println!("test: ================================================================");
    } else if !privilege::can_load_ebpf() {
        anyhow::bail!(
            "the tests load eBPF programs: run `cargo xtask test` as root (or with CAP_BPF, \
             CAP_PERFMON and CAP_NET_ADMIN in the ambient set), or set {UNPRIVILEGED}=1 to skip the eBPF tests"
        );
    }
    setup::run_with_bench_peers()?;
    let binary = build::gateway(Profile::Debug)?;
    let binary = binary
        .canonicalize()
        .context("resolve the gateway binary's path")?;
    let mut cmd = workspace::cargo();
    cmd.args(cargo_test_args(&args.cargo_args))
        .env("GATEWAY_BIN", &binary);
    println!("test: running {}", process::shell_line(&cmd));
    let status = cmd.status().context("cannot start `cargo test`")?;
    // The whole workspace also gets the fuzz smoke: every target builds and runs a few
    // thousand inputs. A run of picked packages is someone iterating: no smoke.
    if !picks_packages(&args.cargo_args) {
        fuzz::smoke()?;
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            println!("test: cargo test was stopped by a signal: {status}");
            ExitCode::FAILURE
        }
    })
}

/// `test --workspace`, unless the caller picked packages (`--workspace` would override
/// `-p`). `--workspace` takes in `gateway-ebpf` too, which only builds for the BPF target
/// (the daemon's build.rs builds it), hence `--exclude`.
fn cargo_test_args(extra: &[String]) -> Vec<String> {
    let scope: &[&str] = if picks_packages(extra) {
        &[]
    } else {
        &["--workspace", "--exclude", "gateway-ebpf"]
    };
    ["test"]
        .iter()
        .chain(scope)
        .map(|arg| (*arg).to_owned())
        .chain(extra.iter().cloned())
        .collect()
}

/// Whether `cargo test` arguments pick packages (before any `--`).
fn picks_packages(extra: &[String]) -> bool {
    extra
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg.starts_with("-p") || arg.starts_with("--package"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> String {
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        cargo_test_args(&extra).join(" ")
    }

    #[test]
    fn whole_workspace_but_the_bpf_crate_by_default() {
        assert_eq!(args(&[]), "test --workspace --exclude gateway-ebpf");
        assert_eq!(
            args(&["--", "-p"]),
            "test --workspace --exclude gateway-ebpf -- -p",
            "arguments for the test binaries do not pick packages"
        );
    }

    #[test]
    fn picked_packages_are_not_overridden() {
        assert_eq!(args(&["-p", "xtask"]), "test -p xtask");
        assert_eq!(
            args(&["--package=gateway-tests"]),
            "test --package=gateway-tests"
        );
        assert_eq!(args(&["-pxtask"]), "test -pxtask");
    }
}

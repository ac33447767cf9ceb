//! `bpf-linker` 0.13.0 built against LLVM 22: links the eBPF crate into a BPF object.
use std::process::Command;

use super::{apt::LLVM_PREFIX, Missing};
use crate::process;

const VERSION: &str = "0.13.0";

/// Installs bpf-linker unless a 0.13 one is on `PATH`; needs the LLVM packages (`llvm_ready`).
pub fn ensure(llvm_ready: bool) -> anyhow::Result<Option<Missing>> {
    match installed_version() {
        Some(version) if is_wanted(&version) => {
            println!("setup: bpf-linker {version} present");
            return Ok(None);
        }
        Some(version) => println!("setup: bpf-linker {version} found, {VERSION} wanted"),
        None => println!("setup: bpf-linker not found"),
    }
    let mut install = install_command();
    if !llvm_ready {
        return Ok(Some(Missing {
            what: format!("bpf-linker {VERSION} (needs the LLVM 22 packages first)"),
            commands: vec![process::shell_line(&install)],
            as_root: false,
        }));
    }
    println!("setup: installing bpf-linker {VERSION} (LLVM 22)");
    process::run("setup", &mut install)?;
    match installed_version() {
        Some(version) if is_wanted(&version) => Ok(None),
        found => anyhow::bail!(
            "installed bpf-linker {VERSION}, but `bpf-linker --version` now reports {found:?}: \
             put cargo's bin directory (usually ~/.cargo/bin) first on PATH"
        ),
    }
}

/// bpf-linker 0.13 finds LLVM through `LLVM_PREFIX`; without it, it picks whatever
/// `llvm-config` is on `PATH` (LLVM 14 on Debian 12) and fails with "unable to find
/// library -lLLVM". llvm-sys reads `LLVM_SYS_221_PREFIX`.
fn install_command() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args([
            "install",
            "bpf-linker",
            "--version",
            VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ]);
    cmd
}

/// The version `bpf-linker --version` reports, if it runs.
fn installed_version() -> Option<String> {
    let output = Command::new("bpf-linker").arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

/// `bpf-linker 0.13.0` → `0.13.0`.
fn parse_version(stdout: &str) -> Option<String> {
    let version = stdout.split_whitespace().nth(1)?;
    Some(version.to_owned())
}

fn is_wanted(version: &str) -> bool {
    version.starts_with("0.13.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_version_line() {
        let version = parse_version("bpf-linker 0.13.0\n").expect("a version");
        assert_eq!(version, "0.13.0");
        assert!(is_wanted(&version));
        assert!(!is_wanted("0.9.15"));
        assert!(!is_wanted("0.130.0"));
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn install_command_points_both_variables_at_llvm_22() {
        let line = process::shell_line(&install_command());
        assert!(
            line.contains("LLVM_SYS_221_PREFIX=/usr/lib/llvm-22"),
            "{line}"
        );
        assert!(line.contains("LLVM_PREFIX=/usr/lib/llvm-22"), "{line}");
        assert!(line.ends_with("install bpf-linker --version 0.13.0 --locked --no-default-features --features llvm-22"), "{line}");
    }
}

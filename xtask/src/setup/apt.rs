//! Debian packages: LLVM 22 development packages, which `bpf-linker` links against, and
//! the proxies the benchmark compares against (nginx, HAProxy).
use std::{path::Path, process::Command};

use anyhow::Context as _;

use super::Missing;
use crate::process;

const LLVM_PACKAGES: [&str; 2] = ["llvm-22-dev", "libpolly-22-dev"];
/// What `cargo xtask bench` measures the gateway against; its smoke test runs them too.
pub const BENCH_PACKAGES: [&str; 2] = ["nginx", "haproxy"];
/// Where the LLVM 22 packages put `llvm-config`.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn llvm_packages(root: bool) -> anyhow::Result<Option<Missing>> {
    let Some(missing) = missing_packages(&LLVM_PACKAGES) else {
        return Ok(without_dpkg());
    };
    install(
        &LLVM_PACKAGES,
        &missing,
        root,
        "LLVM 22 comes from apt.llvm.org on most releases: add its repository \
         (https://apt.llvm.org) and retry",
    )
}

/// nginx and HAProxy from the distribution, for the benchmark.
pub fn bench_packages(root: bool) -> anyhow::Result<Option<Missing>> {
    let Some(missing) = missing_packages(&BENCH_PACKAGES) else {
        let found = BENCH_PACKAGES
            .iter()
            .all(|name| Path::new("/usr/sbin").join(name).exists());
        return Ok((!found).then(|| Missing {
            what: "nginx and haproxy in /usr/sbin".into(),
            commands: vec!["# install nginx and haproxy with the system's package manager".into()],
            as_root: true,
        }));
    };
    install(
        &BENCH_PACKAGES,
        &missing,
        root,
        "nginx and haproxy are in Debian's main archive",
    )
}

/// Installs `missing` (a subset of `all`) with apt-get, or says how to as root.
fn install(
    all: &[&str],
    missing: &[&'static str],
    root: bool,
    hint: &'static str,
) -> anyhow::Result<Option<Missing>> {
    if missing.is_empty() {
        println!("setup: {} present", all.join(" "));
        return Ok(None);
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    if !root {
        return Ok(Some(Missing {
            what: format!("Debian packages {}", missing.join(" ")),
            commands: vec![process::shell_line(&update), process::shell_line(&install)],
            as_root: true,
        }));
    }
    println!("setup: installing {}", missing.join(" "));
    process::run("setup", &mut update)?;
    process::run("setup", &mut install).context(hint)?;
    Ok(None)
}

/// The packages of `packages` not installed, or `None` without `dpkg-query`.
fn missing_packages(packages: &[&'static str]) -> Option<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in packages {
        let output = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
            .ok()?;
        if !is_installed(&String::from_utf8_lossy(&output.stdout)) {
            missing.push(package);
        }
    }
    Some(missing)
}

/// Not a Debian-like system: accept any LLVM 22 found at the usual prefix.
fn without_dpkg() -> Option<Missing> {
    let llvm_config = Path::new(LLVM_PREFIX).join("bin/llvm-config");
    if llvm_config.exists() {
        println!("setup: no dpkg-query; found {}", llvm_config.display());
        return None;
    }
    Some(Missing {
        what: format!("LLVM 22 at {LLVM_PREFIX}"),
        commands: vec![format!(
            "# install LLVM 22 (with Polly) so that {} exists",
            llvm_config.display()
        )],
        as_root: true,
    })
}

/// Reads the `${Status}` field printed by `dpkg-query -W`.
fn is_installed(status: &str) -> bool {
    status.trim() == "install ok installed"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fully_installed_status_counts() {
        assert!(is_installed("install ok installed"));
        assert!(!is_installed("deinstall ok config-files"));
        assert!(!is_installed(""));
    }
}

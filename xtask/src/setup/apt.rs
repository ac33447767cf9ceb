//! LLVM 22 development packages, which `bpf-linker` links against.
use std::{path::Path, process::Command};

use anyhow::Context as _;

use super::Missing;
use crate::process;

const PACKAGES: [&str; 2] = ["llvm-22-dev", "libpolly-22-dev"];
/// Where the LLVM 22 packages put `llvm-config`.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn llvm_packages(root: bool) -> anyhow::Result<Option<Missing>> {
    let Some(missing) = missing_packages() else {
        return Ok(without_dpkg());
    };
    if missing.is_empty() {
        println!("setup: {} present", PACKAGES.join(" "));
        return Ok(None);
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    let mut install = Command::new("apt-get");
    install.args(["install", "-y"]).args(&missing);
    if !root {
        return Ok(Some(Missing {
            what: format!("Debian packages {}", missing.join(" ")),
            commands: vec![process::shell_line(&update), process::shell_line(&install)],
            as_root: true,
        }));
    }
    println!("setup: installing {}", missing.join(" "));
    process::run("setup", &mut update)?;
    process::run("setup", &mut install).context(
        "LLVM 22 comes from apt.llvm.org on most releases: add its repository \
         (https://apt.llvm.org) and retry",
    )?;
    Ok(None)
}

/// The packages of `PACKAGES` not installed, or `None` without `dpkg-query`.
fn missing_packages() -> Option<Vec<&'static str>> {
    let mut missing = Vec::new();
    for package in PACKAGES {
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

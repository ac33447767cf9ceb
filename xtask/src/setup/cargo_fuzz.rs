//! `cargo-fuzz`, which builds and runs the fuzz targets of `fuzz/` (`cargo xtask fuzz`, and
//! the smoke of `cargo xtask test`). A cargo subcommand installed from crates.io.
use std::process::Command;

use crate::process;

const VERSION: &str = "0.13.2";

/// Installs cargo-fuzz unless `cargo fuzz --version` answers.
pub fn ensure() -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if installed {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {VERSION}");
    process::run(
        "setup",
        Command::new("cargo").args(["install", "cargo-fuzz", "--version", VERSION, "--locked"]),
    )
}

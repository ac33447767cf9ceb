//! The nightly toolchain with `rust-src`: aya-build compiles the eBPF crate with
//! `rustup run nightly cargo build -Z build-std=core`.
use std::process::Command;

use anyhow::Context as _;

use crate::process;

pub fn nightly_toolchain() -> anyhow::Result<()> {
    let list = rustup_stdout(&["toolchain", "list"])?;
    if list.lines().any(|line| line.starts_with("nightly")) {
        println!("setup: nightly toolchain present");
        return Ok(());
    }
    println!("setup: installing the nightly toolchain");
    process::run(
        "setup",
        Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
    )
}

pub fn rust_src() -> anyhow::Result<()> {
    let installed = rustup_stdout(&["component", "list", "--toolchain", "nightly", "--installed"])?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        println!("setup: rust-src (nightly) present");
        return Ok(());
    }
    println!("setup: installing rust-src for nightly");
    process::run(
        "setup",
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
}

fn rustup_stdout(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("rustup")
        .args(args)
        .output()
        .context("cannot run `rustup`: install it from https://rustup.rs and retry")?;
    anyhow::ensure!(
        output.status.success(),
        "`rustup {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

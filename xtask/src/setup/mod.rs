//! `cargo xtask setup`: checks each build prerequisite (nightly, rust-src, cargo-fuzz, LLVM,
//! bpf-linker) and installs what is missing.
//! Safe to run any number of times. Without root, it installs what a user may install and
//! prints the commands root must run for the rest.
mod apt;
mod bpf_linker;
mod cargo_fuzz;
mod rustup;

use anyhow::bail;

use crate::privilege;

/// A prerequisite still missing after a step: someone must run `commands`, as root when
/// `as_root`. Steps return `None` when the thing is there or they just installed it.
pub struct Missing {
    pub what: String,
    pub commands: Vec<String>,
    pub as_root: bool,
}

pub fn run() -> anyhow::Result<()> {
    let root = privilege::is_root();
    if !root {
        println!("setup: not running as root: system packages will not be installed");
    }
    rustup::nightly_toolchain()?;
    rustup::rust_src()?;
    cargo_fuzz::ensure()?;
    let llvm = apt::llvm_packages(root)?;
    let linker = bpf_linker::ensure(llvm.is_none())?;
    report([llvm, linker].into_iter().flatten().collect())
}

/// `setup`, plus nginx and HAProxy, which the benchmark (and its smoke test) runs.
pub fn run_with_bench_peers() -> anyhow::Result<()> {
    run()?;
    report(
        apt::bench_packages(privilege::is_root())?
            .into_iter()
            .collect(),
    )
}

/// Says what is still missing and how to install it; an error if anything is.
fn report(missing: Vec<Missing>) -> anyhow::Result<()> {
    if missing.is_empty() {
        println!("setup: everything is installed");
        return Ok(());
    }
    for Missing {
        what,
        commands,
        as_root,
    } in &missing
    {
        let who = if *as_root { "as root" } else { "as this user" };
        println!("setup: MISSING {what}; to install, run {who}:");
        for command in commands {
            println!("    {command}");
        }
    }
    println!("setup: then run `cargo xtask setup` again");
    let names: Vec<_> = missing
        .iter()
        .map(|missing| missing.what.as_str())
        .collect();
    bail!("missing prerequisites: {}", names.join(", "))
}

//! `cargo xtask lint`: the gates every change passes before the tests: formatting (the fuzz
//! targets' too), and
//! clippy over every crate and target with warnings as errors (the workspace's lints
//! include `unwrap_used` and `undocumented_unsafe_blocks`). The layering of the daemon's
//! modules is a test (`gateway-user/tests/layers.rs`), so `cargo xtask test` checks it.
use crate::{process, setup, workspace};

pub fn run() -> anyhow::Result<()> {
    // The daemon's build script builds the eBPF program, which clippy runs too.
    setup::run()?;
    process::run("lint", workspace::cargo().args(["fmt", "--all", "--check"]))?;
    // The fuzz targets are a workspace of their own, which `--all` leaves out.
    process::run(
        "lint",
        workspace::cargo().args(["fmt", "--check", "--manifest-path", "fuzz/Cargo.toml"]),
    )?;
    process::run(
        "lint",
        workspace::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )
}

//! `cargo xtask build`: the daemon, with the eBPF object built and embedded by its build.rs.
use std::path::PathBuf;

use crate::{cli::BuildArgs, process, setup, workspace};

#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    setup::run()?;
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    let binary = gateway(profile)?;
    println!("build: {}", binary.display());
    Ok(())
}

/// Builds `gateway-user` and returns the path of the `gateway` binary.
pub fn gateway(profile: Profile) -> anyhow::Result<PathBuf> {
    let mut cmd = workspace::cargo();
    cmd.args(["build", "--package", "gateway-user"]);
    if let Profile::Release = profile {
        cmd.arg("--release");
    }
    process::run("build", &mut cmd)?;
    let dir = match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    };
    let binary = workspace::target_dir().join(dir).join("gateway");
    anyhow::ensure!(
        binary.exists(),
        "the build succeeded but {} is missing",
        binary.display()
    );
    Ok(binary)
}

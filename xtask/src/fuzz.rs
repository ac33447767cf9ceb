//! `cargo xtask fuzz [TARGET] [--secs N]`: the fuzz targets of `fuzz/` (cargo-fuzz on
//! nightly, libFuzzer), one after the other, each growing its corpus in
//! `fuzz/corpus/TARGET`; and the smoke `cargo xtask test` runs so they keep building.
//!
//! Built once with `--sanitizer none` (the fuzzed code is safe Rust; AddressSanitizer would
//! halve the executions for nothing) and debug assertions on, so an overflow is a finding.
use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{cli::FuzzArgs, process, setup, workspace};

/// Executions of each target in the smoke, after its corpus; with a fixed seed, so a run
/// is the same every time (each target takes well under a second for them).
const SMOKE_RUNS: u32 = 5_000;

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    setup::run()?;
    let targets = pick(args.target.as_deref())?;
    build()?;
    for target in &targets {
        println!("fuzz: {target} for {} s", args.secs);
        process::run(
            "fuzz",
            cargo_fuzz()
                .args(["run", "--sanitizer", "none", "--debug-assertions"])
                .args(target_dir_arg())
                .arg(target)
                .arg("--")
                .arg(format!("-max_total_time={}", args.secs))
                .arg("-print_final_stats=1"),
        )?;
    }
    println!(
        "fuzz: done; keep the corpus small before committing it: \
         cargo +nightly fuzz cmin --sanitizer none TARGET"
    );
    Ok(())
}

/// Builds every target, then runs each over its corpus and [`SMOKE_RUNS`] more inputs.
/// New inputs go to a scratch directory, so the corpus in the repository stays as it is.
pub fn smoke() -> anyhow::Result<()> {
    let targets = pick(None)?;
    build()?;
    let scratch = workspace::target_dir().join("fuzz-smoke");
    // libFuzzer refuses to start without its artifact directory, which a fresh clone lacks
    // (it is ignored by git).
    let artifacts = fuzz_dir().join("artifacts");
    fs::create_dir_all(&artifacts).with_context(|| format!("create {}", artifacts.display()))?;
    for target in &targets {
        let found = scratch.join(target);
        // A fresh directory each time: what the last smoke found is not replayed.
        let _ = fs::remove_dir_all(&found);
        fs::create_dir_all(&found).with_context(|| format!("create {}", found.display()))?;
        let mut cmd = Command::new(binary(target));
        cmd.arg(format!("-runs={SMOKE_RUNS}"))
            .arg("-seed=1")
            .arg(format!(
                "-artifact_prefix={}/",
                fuzz_dir().join("artifacts").display()
            ))
            .arg(&found)
            .arg(fuzz_dir().join("corpus").join(target));
        println!("fuzz: smoke of {target}");
        process::run("fuzz", &mut cmd)
            .with_context(|| format!("the fuzz target {target} failed its smoke run"))?;
    }
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    workspace::root().join("fuzz")
}

/// The fuzz targets: one file each in `fuzz/fuzz_targets/`, by name.
fn targets() -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `target` if it exists, else every target.
fn pick(target: Option<&str>) -> anyhow::Result<Vec<String>> {
    let all = targets()?;
    match target {
        None => Ok(all),
        Some(name) if all.iter().any(|t| t == name) => Ok(vec![name.to_owned()]),
        Some(name) => anyhow::bail!("no fuzz target {name:?}; they are: {}", all.join(", ")),
    }
}

fn build() -> anyhow::Result<()> {
    println!("fuzz: building the fuzz targets (nightly, libFuzzer)");
    process::run(
        "fuzz",
        cargo_fuzz()
            .args(["build", "--sanitizer", "none", "--debug-assertions"])
            .args(target_dir_arg()),
    )
}

/// `cargo +nightly fuzz` from the workspace root, building in `fuzz/target`. Through the
/// rustup proxy (not the stable `CARGO` that runs xtask), so `+nightly` picks the toolchain.
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace::root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .args(["+nightly", "fuzz"]);
    cmd
}

/// `--target-dir fuzz/target` after a `cargo fuzz` subcommand: whatever `CARGO_TARGET_DIR`
/// says, the instrumented build stays apart from the workspace's.
fn target_dir_arg() -> [std::ffi::OsString; 2] {
    ["--target-dir".into(), fuzz_dir().join("target").into()]
}

/// Where `cargo fuzz build` leaves a target's binary.
fn binary(target: &str) -> PathBuf {
    fuzz_dir()
        .join("target")
        .join(host_triple())
        .join("release")
        .join(target)
}

fn host_triple() -> &'static str {
    // cargo-fuzz builds for the host; the daemon runs on x86_64 and aarch64 Linux.
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_a_binary_of_the_fuzz_crate() {
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz manifest");
        let names = targets().expect("targets");
        assert!(names.len() >= 5, "{names:?}");
        for name in &names {
            let bin = format!("name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"");
            assert!(
                manifest.contains(&bin),
                "fuzz/Cargo.toml has no [[bin]] {name}"
            );
            assert!(
                fuzz_dir().join("corpus").join(name).is_dir(),
                "fuzz/corpus/{name} is missing: seed it"
            );
        }
        assert!(pick(Some("nope")).is_err());
        assert_eq!(pick(Some(&names[0])).expect("one"), [names[0].clone()]);
    }

    /// The fuzzed code is built with the versions the daemon ships with: every package both
    /// lock files hold in a compatible series is at the same version (refresh with
    /// `cp Cargo.lock fuzz/`, then any cargo command in fuzz/ adds what only it uses).
    #[test]
    fn the_fuzz_lock_file_follows_the_workspace_one() {
        let packages = |path: PathBuf| -> Vec<(String, String)> {
            let text = fs::read_to_string(&path).expect("read a lock file");
            let mut found = Vec::new();
            let mut name = None;
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("name = ") {
                    name = Some(n.trim_matches('"').to_owned());
                } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
                    found.push((n, v.trim_matches('"').to_owned()));
                }
            }
            found
        };
        // Semver-compatible versions: `0.x` or the major.
        let series = |version: &str| -> String {
            let mut parts = version.split('.');
            match (parts.next(), parts.next()) {
                (Some("0"), Some(minor)) => format!("0.{minor}"),
                (Some(major), _) => major.to_owned(),
                _ => version.to_owned(),
            }
        };
        let workspace = packages(workspace::root().join("Cargo.lock"));
        let fuzz = packages(fuzz_dir().join("Cargo.lock"));
        for (name, version) in &fuzz {
            let shipped: Vec<&String> = workspace
                .iter()
                .filter(|(n, v)| n == name && series(v) == series(version))
                .map(|(_, v)| v)
                .collect();
            assert!(
                shipped.is_empty() || shipped.contains(&version),
                "fuzz/Cargo.lock has {name} {version}, the workspace {shipped:?}"
            );
        }
    }
}

//! Finding the third-party proxies' binaries and asking them what they are.

use std::{
    env,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context as _};
use tokio::process::Command;

/// Where Debian puts daemons; `sbin` is often missing from a non-root `PATH`.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The executable `name` from `PATH` or the `sbin` directories.
pub fn find(name: &str) -> anyhow::Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let dirs = env::split_paths(&path).chain(SBIN_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "`{name}` not found in PATH or {SBIN_DIRS:?}: install it (`apt-get install {name}`; \
         `cargo xtask bench` does this on Debian)"
    )
}

/// Runs `program args` and returns stdout and stderr together (nginx prints its version on
/// stderr, HAProxy on stdout); an error if it fails.
pub async fn output(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {} {}", program.display(), args.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {text}",
            program.display(),
            args.join(" "),
            output.status
        );
    }
    Ok(text)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

//! Running external commands and printing them the way a person would type them.
use std::process::Command;

use anyhow::{bail, Context as _};

/// Runs `cmd` with inherited stdio, printing it first; fails unless it exits 0.
pub fn run(task: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("{task}: running {}", shell_line(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", shell_line(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", shell_line(cmd));
    }
    Ok(())
}

/// `cmd` as a shell line: environment assignments, program, arguments, quoted as needed.
pub fn shell_line(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| {
            format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            )
        })
    });
    let program = std::iter::once(quote(&cmd.get_program().to_string_lossy()));
    let args = cmd.get_args().map(|arg| quote(&arg.to_string_lossy()));
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_shows_env_program_and_quoted_args() {
        let mut cmd = Command::new("dpkg-query");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["-W", "-f=${Status}", "it's"]);
        assert_eq!(
            shell_line(&cmd),
            r"LLVM_PREFIX=/usr/lib/llvm-22 dpkg-query -W '-f=${Status}' 'it'\''s'"
        );
    }
}

//! A proxy's process: spawned with its output in log files, stopped politely then firmly,
//! and killed with all its descendants if the bench drops it (a panic, an early return).

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::procstat;

/// How long a proxy may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Log lines shown per file when a proxy failed.
const TAIL_LINES: usize = 40;

/// A running child process and the files its logs go to.
pub struct Supervised {
    name: &'static str,
    child: Child,
    pid: u32,
    /// Its stdout/stderr file first, then log files it writes itself (nginx's error log).
    logs: Vec<PathBuf>,
    /// Set once reaped by `stop`: nothing left for `Drop` to kill.
    reaped: bool,
}

/// Where the child's stdout goes.
pub enum Stdout {
    /// Into the log file, with stderr.
    Log,
    /// Wherever the caller already set it (the gateway's ready line is read from a pipe).
    AsConfigured,
}

impl Supervised {
    /// Spawns `command` with stdin from /dev/null and stderr (and stdout, unless `stdout` says
    /// otherwise) appended to `log`. `more_logs` are files the process writes itself, shown
    /// in errors.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        stdout: Stdout,
        log: &Path,
        more_logs: &[PathBuf],
    ) -> anyhow::Result<Self> {
        let file = open_log(log)?;
        if let Stdout::Log = stdout {
            command.stdout(file.try_clone().context("duplicate the log file handle")?);
        }
        command
            .stdin(Stdio::null())
            .stderr(file)
            // A panicking bench must not leave proxies behind; `Drop` also kills descendants.
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("spawn {name}: {:?}", command.as_std()))?;
        // `command` may hold the write end of a pipe the caller reads (the gateway's stdout):
        // dropping it here leaves the child as the only writer, so the reader sees EOF when
        // the child exits.
        drop(command);
        let pid = child.id().context("pid of the just-spawned child")?;
        let mut logs = vec![log.to_owned()];
        logs.extend_from_slice(more_logs);
        Ok(Self {
            name,
            child,
            pid,
            logs,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the process exits (cancel-safe: use it in `select!` against readiness).
    pub async fn exited(&mut self) -> anyhow::Result<ExitStatus> {
        self.child
            .wait()
            .await
            .with_context(|| format!("wait for {}", self.name))
    }

    /// The last lines of each log file, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        for path in &self.logs {
            let content = std::fs::read_to_string(path)
                .unwrap_or_else(|error| format!("(cannot read: {error})"));
            let lines: Vec<&str> = content.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
            text.push_str(&format!(
                "--- {} ---\n{}\n",
                path.display(),
                tail.join("\n")
            ));
        }
        text
    }

    /// An error with the exit status and log tail of a process that exited on its own.
    pub fn died(&self, status: ExitStatus, when: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} exited {when} ({status}); log tail:\n{}",
            self.name,
            self.log_tail()
        )
    }

    /// SIGTERM, then SIGKILL (to it and its descendants) if it has not exited after
    /// [`STOP_GRACE`]; reaps it. An error if it had already exited.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .with_context(|| format!("check on {}", self.name))?
        {
            self.reaped = true;
            return Err(self.died(status, "before it was stopped"));
        }
        // Listed before the leader goes: once it is gone, its orphans are no longer found
        // under it.
        let tree = procstat::process_tree(self.pid);
        signal(self.pid, libc::SIGTERM);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("wait for {} after SIGTERM", self.name))?;
            }
            Err(_elapsed) => {
                eprintln!(
                    "bench: {} did not exit {STOP_GRACE:?} after SIGTERM; killing it",
                    self.name
                );
                kill_tree(&tree);
                self.child
                    .wait()
                    .await
                    .with_context(|| format!("wait for {} after SIGKILL", self.name))?;
            }
        }
        self.reaped = true;
        Ok(())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if !self.reaped {
            kill_tree(&procstat::process_tree(self.pid));
        }
    }
}

/// SIGKILL to `tree`, leader first: a surviving nginx master would replace killed workers.
fn kill_tree(tree: &[u32]) {
    for &pid in tree {
        signal(pid, libc::SIGKILL);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers. The pids are our child (not reaped yet, so not
    // reused) or its descendants listed just before; ESRCH for one already gone is fine.
    unsafe { libc::kill(pid, signal) };
}

fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log file {}", path.display()))
}

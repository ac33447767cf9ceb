//! The gateway as a child process: its stdout is forwarded line by line and watched for
//! the readiness line; its stderr goes straight to ours.
use std::{path::Path, process::Stdio, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, ChildStdout, Command},
    sync::oneshot,
};

use crate::readiness::{self, Ready};

/// How long the gateway may take to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Gateway {
    child: Child,
    ready: oneshot::Receiver<anyhow::Result<Ready>>,
}

impl Gateway {
    pub fn spawn(binary: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the gateway's stdout is piped")?;
        let (tx, ready) = oneshot::channel();
        tokio::spawn(forward(stdout, tx));
        Ok(Self { child, ready })
    }

    /// Waits for the readiness line; fails if the gateway exits or breaks the contract first.
    pub async fn ready(&mut self) -> anyhow::Result<Ready> {
        tokio::select! {
            ready = &mut self.ready => match ready {
                Ok(ready) => ready,
                Err(_) => {
                    let status = self.child.wait().await.context("wait for the gateway")?;
                    anyhow::bail!("the gateway closed its stdout before it was ready ({status})")
                }
            },
            status = self.child.wait() => {
                let status = status.context("wait for the gateway")?;
                anyhow::bail!("the gateway exited before it was ready: {status}")
            }
        }
    }

    /// Runs until the gateway exits (an error) or `stop` resolves (then stops it).
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            status = self.child.wait() => {
                let status = status.context("wait for the gateway")?;
                anyhow::bail!("the gateway exited: {status}")
            }
            () = stop => self.stop().await,
        }
    }

    /// SIGTERM, so the gateway can detach its programs and drain; SIGKILL after `STOP_GRACE`.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
        {
            // SAFETY: kill(2) only sends a signal; `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => println!("run: gateway stopped ({})", status.context("wait")?),
            Err(_) => {
                println!("run: gateway still running after {STOP_GRACE:?}; killing it");
                self.child.kill().await.context("kill the gateway")?;
            }
        }
        Ok(())
    }
}

/// Copies the gateway's stdout to ours and reports the first readiness line on `ready`.
async fn forward(stdout: ChildStdout, ready: oneshot::Sender<anyhow::Result<Ready>>) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(err) => {
                eprintln!("run: reading the gateway's stdout: {err}");
                return;
            }
        };
        println!("{line}");
        let parsed = match readiness::parse(&line) {
            Ok(None) => continue,
            Ok(Some(parsed)) => Ok(parsed),
            Err(err) => Err(anyhow::Error::new(err).context(format!("in line {line:?}"))),
        };
        if let Some(tx) = ready.take() {
            // The receiver is gone only if `run` already gave up; nothing left to tell.
            let _ = tx.send(parsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::Dataplane;

    fn sh(script: &str) -> Gateway {
        let args = ["-c".to_owned(), script.to_owned()];
        Gateway::spawn(Path::new("/bin/sh"), &args).expect("spawn /bin/sh")
    }

    #[tokio::test]
    async fn readiness_is_reported_and_stop_ends_the_child() {
        let mut gateway = sh("echo starting; \
             echo 'gateway ready listen=http://127.0.0.1:1 admin=- dataplane=userspace'; \
             exec sleep 60");
        let ready = gateway.ready().await.expect("the readiness line");
        assert_eq!(ready.dataplane, Dataplane::Userspace);
        assert_eq!(ready.admin, None);
        gateway.run_until(async {}).await.expect("stop the child");
    }

    #[tokio::test]
    async fn exit_before_readiness_is_an_error() {
        let mut gateway = sh("echo 'bind failed' >&2; exit 3");
        let err = gateway.ready().await.expect_err("no readiness line");
        assert!(format!("{err:#}").contains("exit status: 3"), "{err:#}");
    }

    #[tokio::test]
    async fn a_broken_readiness_line_is_an_error() {
        let mut gateway = sh("echo 'gateway ready listen=x dataplane=ebpf'; exec sleep 60");
        let err = gateway.ready().await.expect_err("admin is missing");
        assert!(format!("{err:#}").contains("admin"), "{err:#}");
    }
}

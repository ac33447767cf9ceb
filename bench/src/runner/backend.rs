//! The benchmark backend as a child process: every path forwards to the same one, and it
//! has its own descriptor limit and CPU accounting, apart from the load generator's.

use std::{net::SocketAddr, process::Stdio};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

pub struct BackendProcess {
    child: Child,
    addr: SocketAddr,
}

impl BackendProcess {
    /// Starts `gateway-bench backend` and waits for its `backend ready ADDR` line.
    pub async fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("find the gateway-bench executable")?;
        let mut child = Command::new(exe)
            .args(["backend", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start the benchmark backend")?;
        let stdout = child.stdout.take().context("backend stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let Some(line) = lines
            .next_line()
            .await
            .context("read the backend's ready line")?
        else {
            bail!("the benchmark backend exited before it was ready");
        };
        let addr = line
            .strip_prefix("backend ready ")
            .with_context(|| format!("unexpected first line from the backend: {line:?}"))?
            .parse()
            .with_context(|| format!("bad address in the backend's ready line: {line:?}"))?;
        Ok(Self { child, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the benchmark backend died during the run: {status}");
        }
        self.child
            .kill()
            .await
            .context("stop the benchmark backend")
    }
}

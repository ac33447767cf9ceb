//! Connect and upgrade, async and blocking: the first two stages of every workload.
use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::wire::{ClientHandshake, Mode};

/// Connecting and upgrading must each finish by then; a path that takes longer is broken,
/// not slow, and the run should say so instead of hanging.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the reads of the response head; what follows the head in the last read is
/// returned as leftover payload.
const HEAD_READ_LEN: usize = 4096;

/// Connects to `target` with `TCP_NODELAY` and upgrades to `mode`. Returns the stream and
/// the payload bytes that arrived with the response head.
pub async fn connect(target: SocketAddr, mode: Mode) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut stream = tokio::time::timeout(UPGRADE_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| anyhow!("connect to {target}: no answer within {UPGRADE_TIMEOUT:?}"))?
        .with_context(|| format!("connect to {target}"))?;
    stream
        .set_nodelay(true)
        .with_context(|| format!("connect to {target}: TCP_NODELAY"))?;
    let leftover = tokio::time::timeout(UPGRADE_TIMEOUT, upgrade(&mut stream, mode))
        .await
        .map_err(|_| anyhow!("upgrade to {mode} at {target}: no 101 within {UPGRADE_TIMEOUT:?}"))?
        .with_context(|| format!("upgrade to {mode} at {target}"))?;
    Ok((stream, leftover))
}

async fn upgrade(stream: &mut TcpStream, mode: Mode) -> anyhow::Result<Vec<u8>> {
    let (mut handshake, request) = ClientHandshake::new(mode);
    stream
        .write_all(&request)
        .await
        .context("send the request")?;
    let mut buf = [0_u8; HEAD_READ_LEN];
    loop {
        let read = stream.read(&mut buf).await.context("read the response")?;
        if read == 0 {
            bail!("connection closed before the end of the response head");
        }
        if let Some(leftover) = handshake.feed(&buf[..read])? {
            return Ok(leftover);
        }
    }
}

/// The blocking twin of [`connect`], for workloads that run on their own thread. Reads and
/// writes of the returned stream time out after [`UPGRADE_TIMEOUT`], so a stalled path
/// fails instead of hanging the thread.
pub fn connect_blocking(
    target: SocketAddr,
    mode: Mode,
) -> anyhow::Result<(std::net::TcpStream, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect_timeout(&target, UPGRADE_TIMEOUT)
        .with_context(|| format!("connect to {target}"))?;
    stream
        .set_nodelay(true)
        .with_context(|| format!("connect to {target}: TCP_NODELAY"))?;
    stream
        .set_read_timeout(Some(UPGRADE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(UPGRADE_TIMEOUT)))
        .with_context(|| format!("connect to {target}: socket timeouts"))?;
    let leftover = upgrade_blocking(&mut stream, mode)
        .with_context(|| format!("upgrade to {mode} at {target}"))?;
    Ok((stream, leftover))
}

fn upgrade_blocking(stream: &mut std::net::TcpStream, mode: Mode) -> anyhow::Result<Vec<u8>> {
    let (mut handshake, request) = ClientHandshake::new(mode);
    stream.write_all(&request).context("send the request")?;
    let mut buf = [0_u8; HEAD_READ_LEN];
    loop {
        let read = stream.read(&mut buf).context("read the response")?;
        if read == 0 {
            bail!("connection closed before the end of the response head");
        }
        if let Some(leftover) = handshake.feed(&buf[..read])? {
            return Ok(leftover);
        }
    }
}

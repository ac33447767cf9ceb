//! Readiness: a proxy is ready once one real WebSocket upgrade request went through it to
//! the backend and an answer came back.
//!
//! The listening socket exists before the proxy starts, so the probe's connection simply
//! waits in the accept queue until the proxy takes it: one attempt, no polling.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::child::Supervised;
use crate::wire::Mode;

/// How long a proxy may take to start and forward its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest response head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The example key of RFC 6455 section 1.3; any valid key would do.
const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A WebSocket upgrade request on `addr` for the backend's echo mode, which the probe ends
/// at once by closing: the backend takes that as a finished tunnel, not an error to log.
pub fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        Mode::Echo.path()
    )
}

/// Reads a response head; returns its status and the bytes read past it.
pub async fn read_response_head(stream: &mut TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) =
            response.parse(&buf).context("malformed response head")?
        {
            let status = response.code.context("response without a status")?;
            return Ok((status, buf.split_off(len)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            bail!("response head longer than {MAX_HEAD_BYTES} bytes");
        }
        let read = stream
            .read(&mut chunk)
            .await
            .context("read the response head")?;
        if read == 0 {
            bail!(
                "connection closed after {} bytes of response head: {:?}",
                buf.len(),
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// Waits until `child` forwards an upgrade request on `addr` to the backend, or fails with
/// its log tail if it exits or does not manage within [`READY_TIMEOUT`].
pub async fn wait_forwarding(child: &mut Supervised, addr: SocketAddr) -> anyhow::Result<()> {
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(READY_TIMEOUT, first_upgrade(addr)) => outcome,
        status = child.exited() => return Err(child.died(status?, "before it was ready")),
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.context(format!(
            "first request through {addr} failed; log tail:\n{}",
            child.log_tail()
        ))),
        Err(_elapsed) => bail!(
            "no answer through {addr} within {READY_TIMEOUT:?}; log tail:\n{}",
            child.log_tail()
        ),
    }
}

/// One upgrade round trip. Any answer below 500 comes from the backend: proxies answer
/// well-formed requests themselves only with 5xx (backend unreachable), so a 101 — or a
/// 4xx from a backend that wants another path — proves the proxy forwards.
async fn first_upgrade(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream
        .write_all(upgrade_request(addr).as_bytes())
        .await
        .context("send the upgrade request")?;
    let (status, _) = read_response_head(&mut stream).await?;
    if status >= 500 {
        bail!("the proxy answered {status}: it cannot reach the backend or rejects its answer");
    }
    Ok(())
}

//! How a tunnel ends: once a side has everything it expects, the peer's EOF must follow,
//! with no byte after the last one, and soon.
use std::{io::Read as _, net::SocketAddr, time::Duration};

use anyhow::{anyhow, bail, Context as _};
use tokio::{
    io::AsyncWriteExt as _,
    net::tcp::{ReadHalf, WriteHalf},
};

use crate::payload;

/// A path must pass the EOF on this soon; one that does not would leak tunnels.
pub const EOF_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for EOF on `reader`; fails on a byte past the end or after [`EOF_TIMEOUT`].
pub async fn expect_eof(reader: &ReadHalf<'_>) -> anyhow::Result<()> {
    tokio::time::timeout(EOF_TIMEOUT, payload::expect_eof(reader))
        .await
        .map_err(|_| anyhow!("no EOF within {EOF_TIMEOUT:?} after the last byte"))?
        .context("waiting for EOF")
}

/// Ends a tunnel from the client's side once it has everything: half-closes, then waits for
/// the peer's EOF ([`expect_eof`]); errors name the stage and `target`.
pub async fn close(
    reader: &ReadHalf<'_>,
    writer: &mut WriteHalf<'_>,
    target: SocketAddr,
) -> anyhow::Result<()> {
    writer
        .shutdown()
        .await
        .with_context(|| format!("close (half-close) with {target}"))?;
    expect_eof(reader)
        .await
        .with_context(|| format!("close (EOF) with {target}"))
}

/// [`expect_eof`] for a blocking stream (whose read timeout bounds the wait).
pub fn expect_eof_blocking(stream: &mut std::net::TcpStream) -> anyhow::Result<()> {
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte).context("waiting for EOF")? {
        0 => Ok(()),
        _ => bail!("bytes past the end of the stream"),
    }
}

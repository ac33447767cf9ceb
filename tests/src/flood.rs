//! Pattern streams ([`Pattern`]) written and read as fast as a socket takes them, with
//! counters a test can watch from outside while they run (how far each side got).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::pattern::{Mismatch, Pattern};

/// Bytes per write and per read.
const CHUNK_BYTES: usize = 256 << 10;

/// Writes `len` bytes of `seed`'s pattern into `writer`, adding to `written` after every
/// write, then half-closes. Panics if a write fails.
pub async fn write(mut writer: impl AsyncWrite + Unpin, seed: u64, len: u64, written: &AtomicU64) {
    let pattern = Pattern::new(seed);
    let mut chunk = vec![0; CHUNK_BYTES];
    let mut sent = 0;
    while sent < len {
        let now = usize::try_from(len - sent).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        pattern.fill(sent, &mut chunk[..now]);
        writer.write_all(&chunk[..now]).await.expect("write");
        sent += now as u64;
        written.fetch_add(now as u64, Ordering::Relaxed);
    }
    writer.shutdown().await.expect("half-close");
}

/// Reads `reader` to EOF, checking every byte against `seed`'s pattern (`first`, bytes
/// already read, before the rest) and adding to `read` as it goes; returns how many bytes
/// the stream had. Panics if a read fails.
pub async fn read(
    mut reader: impl AsyncRead + Unpin,
    seed: u64,
    first: &[u8],
    read: &AtomicU64,
) -> Result<u64, Mismatch> {
    let mut checker = Pattern::new(seed).checker();
    checker.check(first)?;
    read.fetch_add(first.len() as u64, Ordering::Relaxed);
    let mut buf = vec![0; CHUNK_BYTES];
    loop {
        match reader.read(&mut buf).await.expect("read") {
            0 => return Ok(checker.offset()),
            n => {
                checker.check(&buf[..n])?;
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

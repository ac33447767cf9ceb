//! Reading and writing until a stream ends, keeping how it ended: a fault test passes on a
//! clean EOF or a reset, and fails on a hang, so the end itself is the result.

use std::{io, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    time::Instant,
};

use crate::{
    data::{Hasher, Summary, CHUNK_BYTES},
    wait::within,
};

/// How a read side ended, and what came before.
#[derive(Debug)]
pub struct ReadEnd {
    /// Everything read (after the bytes passed in as already read).
    pub received: Summary,
    /// `Ok` for a clean EOF, else the error the read returned.
    pub ended: io::Result<()>,
    /// When the end was seen.
    pub at: Instant,
}

impl ReadEnd {
    /// Panics unless the stream ended by EOF or by a reset (`ECONNRESET`; `EPIPE` is how
    /// Linux reports a reset that hits a socket which had already received a FIN).
    pub fn expect_eof_or_reset(&self, who: &str) {
        if let Err(error) = &self.ended {
            assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{who}: the stream ended with an error other than a reset: {error}"
            );
        }
    }

    /// `"EOF"` or the error, for test output.
    pub fn describe(&self) -> String {
        match &self.ended {
            Ok(()) => "EOF".to_owned(),
            Err(error) => format!("error ({error})"),
        }
    }
}

/// Reads until EOF or an error, hashing `already` then everything read.
pub async fn read_until_end(reader: &mut (impl AsyncRead + Unpin), already: &[u8]) -> ReadEnd {
    let mut hasher = Hasher::default();
    hasher.update(already);
    read_hashed_until_end(reader, hasher).await
}

/// Reads until EOF or an error, adding everything read to `hasher` (which holds what was read
/// before, so the summary covers the whole stream).
pub async fn read_hashed_until_end(
    reader: &mut (impl AsyncRead + Unpin),
    mut hasher: Hasher,
) -> ReadEnd {
    let mut chunk = vec![0; CHUNK_BYTES];
    let ended = loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(read) => hasher.update(&chunk[..read]),
            Err(error) => break Err(error),
        }
    };
    ReadEnd {
        received: hasher.finish(),
        ended,
        at: Instant::now(),
    }
}

/// Reads exactly `len` bytes into `hasher`; an EOF or error before that is an `Err`.
pub async fn read_exact_hashed(
    reader: &mut (impl AsyncRead + Unpin),
    hasher: &mut Hasher,
    len: u64,
) -> io::Result<()> {
    let mut left = len;
    let mut chunk = vec![0; CHUNK_BYTES];
    while left > 0 {
        let want = usize::try_from(left).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        let read = reader.read(&mut chunk[..want]).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF with {left} of {len} bytes still to come"),
            ));
        }
        hasher.update(&chunk[..read]);
        left -= read as u64;
    }
    Ok(())
}

/// Reads exactly `len` bytes (the first of them `already`, which must not be longer) and
/// returns their summary; an EOF or error before that is an `Err`.
pub async fn read_exact_summary(
    reader: &mut (impl AsyncRead + Unpin),
    already: &[u8],
    len: u64,
) -> io::Result<Summary> {
    assert!(
        already.len() as u64 <= len,
        "{} bytes arrived ahead, more than the {len} expected",
        already.len()
    );
    let mut hasher = Hasher::default();
    hasher.update(already);
    read_exact_hashed(reader, &mut hasher, len - already.len() as u64).await?;
    Ok(hasher.finish())
}

/// Writes small chunks, `pause` apart, until a write fails, and returns that error: how a
/// peer that already read EOF learns that the connection is gone (the first write after the
/// far end closed draws a reset, a later one fails). Panics if writes still succeed after
/// `limit`.
pub async fn write_until_error(
    writer: &mut (impl AsyncWrite + Unpin),
    pause: Duration,
    limit: Duration,
    who: &str,
) -> io::Error {
    within(limit, &format!("{who}: a write fails"), async {
        loop {
            if let Err(error) = writer.write_all(&[0x5a; 64]).await {
                return error;
            }
            // Pacing between probes, not a wait for readiness: the failure is what we wait on.
            tokio::time::sleep(pause).await;
        }
    })
    .await
}

//! Seeded random payloads and length + SHA-256 summaries, so every test checks the bytes that
//! arrived against the bytes that were sent, at both ends.

use std::{fmt, io};

use rand::{rngs::StdRng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of the writes and reads the stream helpers make.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Environment variable that fixes the seed of [`seeded_rng`], to replay a failure.
pub const SEED_ENV: &str = "GATEWAY_TEST_SEED";

/// Length and SHA-256 of a byte stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Summary {
    /// The summary of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = Hasher::default();
        hasher.update(bytes);
        hasher.finish()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, sha256 ", self.len)?;
        self.sha256
            .iter()
            .try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Builds a [`Summary`] incrementally.
#[derive(Clone, Default)]
pub struct Hasher {
    len: u64,
    sha256: Sha256,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.sha256.update(bytes);
    }

    pub fn finish(self) -> Summary {
        Summary {
            len: self.len,
            sha256: self.sha256.finalize().into(),
        }
    }
}

/// The seed of this run of `test`: `GATEWAY_TEST_SEED`, or a random one; prints it so a
/// failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(value) => value.parse().expect("GATEWAY_TEST_SEED is a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// A random generator seeded with [`test_seed`].
pub fn seeded_rng(test: &str) -> StdRng {
    StdRng::seed_from_u64(test_seed(test))
}

/// `len` random bytes.
pub fn random_bytes(rng: &mut impl RngCore, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Writes `len` random bytes in [`CHUNK_BYTES`] writes and returns their summary.
pub async fn write_random(
    writer: &mut (impl AsyncWrite + Unpin),
    rng: &mut impl RngCore,
    len: u64,
) -> io::Result<Summary> {
    let mut hasher = Hasher::default();
    let mut chunk = vec![0; CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let now = usize::try_from(left).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        let chunk = &mut chunk[..now];
        rng.fill_bytes(chunk);
        writer.write_all(chunk).await?;
        hasher.update(chunk);
        left -= now as u64;
    }
    writer.flush().await?;
    Ok(hasher.finish())
}

/// Reads until end of stream and returns the summary of `already` (bytes read earlier, e.g.
/// past an HTTP head) followed by everything read.
pub async fn read_to_eof(
    reader: &mut (impl AsyncRead + Unpin),
    already: &[u8],
) -> io::Result<Summary> {
    let mut hasher = Hasher::default();
    hasher.update(already);
    let mut chunk = vec![0; CHUNK_BYTES];
    loop {
        match reader.read(&mut chunk).await? {
            0 => return Ok(hasher.finish()),
            read => hasher.update(&chunk[..read]),
        }
    }
}

/// Copies `reader` to `writer` until end of stream (`already` first), then shuts `writer` down;
/// returns the summary of what went through.
pub async fn echo_to_eof(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    already: &[u8],
) -> io::Result<Summary> {
    let mut hasher = Hasher::default();
    hasher.update(already);
    writer.write_all(already).await?;
    let mut chunk = vec![0; CHUNK_BYTES];
    loop {
        match reader.read(&mut chunk).await? {
            0 => break,
            read => {
                hasher.update(&chunk[..read]);
                writer.write_all(&chunk[..read]).await?;
            }
        }
    }
    writer.shutdown().await?;
    Ok(hasher.finish())
}

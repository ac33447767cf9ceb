//! Random traffic for one side of a tunnel, for stress tests hunting lost or duplicated
//! bytes: a [`SidePlan`] says how many bytes a side sends (mostly small, up to 2 MiB), with
//! which seed, and whether it reads slowly; [`run_side`] sends them in writes of random size
//! with random short pauses, half-closes when told ([`Close`]), and reads the other side to
//! EOF meanwhile, keeping its [`Progress`] so a side that hangs can say where.
//!
//! The bytes are the seed's [`Pattern`], so the reader checks each one by position as it
//! arrives and a failure names the first wrong offset (and whether bytes came twice or went
//! missing there), not only that a hash differs.

use std::{
    fmt, io,
    sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    time::Duration,
};

use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::{oneshot, Barrier},
};

use crate::{
    data::{Hasher, Summary, CHUNK_BYTES},
    pattern::Pattern,
};

/// Most bytes one side sends.
pub const MAX_BYTES: u64 = 2 << 20;
/// Largest single write.
const MAX_WRITE_BYTES: usize = 64 << 10;
/// Largest single read of a slow reader.
const SLOW_READ_BYTES: usize = 4 << 10;
/// Chance that one side reads slowly.
const SLOW_READER_PERCENT: u32 = 20;

/// What one side of a tunnel does.
#[derive(Clone, Copy, Debug)]
pub struct SidePlan {
    /// Bytes it sends.
    pub send: u64,
    /// Seed of its bytes, write sizes and pauses.
    pub seed: u64,
    /// Whether it reads in small chunks with short pauses.
    pub slow_reader: bool,
}

impl SidePlan {
    /// A random plan: a size from [`random_size`], a seed, and a slow reader one time in five.
    pub fn random(rng: &mut StdRng) -> Self {
        Self {
            send: random_size(rng),
            seed: rng.random(),
            slow_reader: rng.random_ratio(SLOW_READER_PERCENT, 100),
        }
    }
}

/// 0..=2 MiB, skewed to small: half up to 1 KiB, most of the rest up to 64 KiB.
pub fn random_size(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..100) {
        0..50 => rng.random_range(0..=1 << 10),
        50..80 => rng.random_range(1 << 10..=64 << 10),
        80..95 => rng.random_range(64 << 10..=512 << 10),
        _ => rng.random_range(512 << 10..=MAX_BYTES),
    }
}

/// When a side half-closes, once it has sent everything.
pub enum Close<'a> {
    Now,
    /// After it has read the other side's EOF.
    AfterEof,
    /// When the other side is ready to half-close too.
    At(&'a Barrier),
}

/// How far one side got, kept as it goes so a side that times out can say where it hung.
#[derive(Default)]
pub struct Progress {
    /// The client's port, which the gateway's log names (`client=127.0.0.1:PORT`); 0 on the
    /// backend side.
    pub client_port: AtomicU16,
    sent: AtomicU64,
    shut: AtomicBool,
    received: AtomicU64,
    eof: AtomicBool,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client_port.load(Ordering::Relaxed) {
            0 => {}
            port => write!(f, "client port {port}: ")?,
        }
        write!(
            f,
            "sent {} bytes{}, received {} bytes{}",
            self.sent.load(Ordering::Relaxed),
            if self.shut.load(Ordering::Relaxed) {
                " and half-closed"
            } else {
                ""
            },
            self.received.load(Ordering::Relaxed),
            if self.eof.load(Ordering::Relaxed) {
                " and EOF"
            } else {
                ", no EOF"
            }
        )
    }
}

/// One side of a tunnel: sends its bytes, half-closes as told, and reads the other side's
/// bytes to EOF meanwhile, checking each against the other side's pattern (`peer_seed`).
/// Returns the summaries of what it sent and received.
pub async fn run_side(
    stream: &mut TcpStream,
    already: &[u8],
    plan: SidePlan,
    peer_seed: u64,
    close: Close<'_>,
    progress: &Progress,
) -> io::Result<(Summary, Summary)> {
    let (mut reader, mut writer) = stream.split();
    let (eof_tx, eof_rx) = oneshot::channel::<()>();
    let send = async {
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let sent = write_paced(&mut writer, plan.seed, &mut rng, plan.send, progress).await?;
        match close {
            Close::Now => {}
            // A dropped sender means the read failed; its error is reported below.
            Close::AfterEof => {
                let _ = eof_rx.await;
            }
            Close::At(barrier) => {
                barrier.wait().await;
            }
        }
        writer.shutdown().await?;
        progress.shut.store(true, Ordering::Relaxed);
        Ok::<_, io::Error>(sent)
    };
    let receive = async {
        let mut rng = StdRng::seed_from_u64(!plan.seed);
        let slow = plan.slow_reader.then_some(&mut rng);
        let received = read_counted(&mut reader, already, peer_seed, slow, progress).await;
        if received.is_ok() {
            progress.eof.store(true, Ordering::Relaxed);
            let _ = eof_tx.send(());
        }
        received
    };
    let (sent, received) = tokio::join!(send, receive);
    Ok((sent?, received?))
}

/// Writes `len` bytes of the pattern of `seed` in writes of random size (from `rng`), now
/// and then pausing a little.
pub async fn write_paced(
    writer: &mut (impl AsyncWrite + Unpin),
    seed: u64,
    rng: &mut StdRng,
    len: u64,
    progress: &Progress,
) -> io::Result<Summary> {
    let pattern = Pattern::new(seed);
    let mut hasher = Hasher::default();
    let mut chunk = vec![0; MAX_WRITE_BYTES];
    let mut left = len;
    if rng.random_ratio(1, 4) {
        pause(rng, 5).await;
    }
    while left > 0 {
        let most = if rng.random_bool(0.5) {
            1 << 10
        } else {
            MAX_WRITE_BYTES
        };
        let size = rng
            .random_range(1..=most)
            .min(usize::try_from(left).unwrap_or(most));
        let chunk = &mut chunk[..size];
        pattern.fill(len - left, chunk);
        writer.write_all(chunk).await?;
        hasher.update(chunk);
        progress.sent.fetch_add(size as u64, Ordering::Relaxed);
        left -= size as u64;
        if rng.random_ratio(1, 16) {
            pause(rng, 3).await;
        }
    }
    Ok(hasher.finish())
}

/// Reads to EOF, checking every byte (`already`, then everything read) against the pattern
/// of `seed`: the first wrong one is an `InvalidData` error naming its offset. With `slow`,
/// reads small chunks and pauses a little after some reads: a slow consumer.
pub async fn read_counted(
    reader: &mut (impl AsyncRead + Unpin),
    already: &[u8],
    seed: u64,
    mut slow: Option<&mut StdRng>,
    progress: &Progress,
) -> io::Result<Summary> {
    let mut checker = Pattern::new(seed).checker();
    let mut check = |bytes: &[u8]| {
        checker
            .check(bytes)
            .map_err(|mismatch| io::Error::new(io::ErrorKind::InvalidData, mismatch.to_string()))
    };
    check(already)?;
    let mut hasher = Hasher::default();
    hasher.update(already);
    progress
        .received
        .fetch_add(already.len() as u64, Ordering::Relaxed);
    let mut chunk = vec![0; CHUNK_BYTES];
    loop {
        let want = match slow.as_deref_mut() {
            Some(rng) => rng.random_range(1..=SLOW_READ_BYTES),
            None => CHUNK_BYTES,
        };
        match reader.read(&mut chunk[..want]).await? {
            0 => return Ok(hasher.finish()),
            read => {
                check(&chunk[..read])?;
                hasher.update(&chunk[..read]);
                progress.received.fetch_add(read as u64, Ordering::Relaxed);
            }
        }
        if let Some(rng) = slow.as_deref_mut() {
            if rng.random_ratio(1, 8) {
                pause(rng, 2).await;
            }
        }
    }
}

/// Sleeps 0..=`most_ms` ms: part of the traffic pattern, not a wait for readiness.
async fn pause(rng: &mut StdRng, most_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..=most_ms))).await;
}

//! The bytes every workload moves, and how both ends check them.
//!
//! Senders cycle through one seeded pseudo-random [`pattern`], generated once per process,
//! so a write never allocates or fills a buffer. Receivers fold what they read into a
//! [`Checksum`] (byte count and CRC-32) and compare it with [`expected_from`], computed from
//! the pattern without replaying the stream. A path that loses, duplicates, reorders or
//! flips bytes therefore fails verification instead of looking fast.
//!
//! Reads land in a per-thread scratch buffer ([`read_chunk`]), so ten thousand idle tunnels
//! hold no receive buffer of their own.
use std::{cell::RefCell, fmt, io, sync::OnceLock};

use rand::{RngCore as _, SeedableRng as _};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt as _},
    net::tcp::ReadHalf,
};

use crate::wire::SUMMARY_LEN;

/// Length of the cycled pattern: about 1 MiB, and prime, so that no power-of-two buffer size
/// of a proxy lines up with it and a dropped-and-repeated buffer still changes the CRC.
pub const PATTERN_LEN: usize = (1 << 20) - 3;

/// Fixed seed: every process (client, backend) generates the same pattern.
const PATTERN_SEED: u64 = 0x6761_7465_7761_7921;

/// Size of the per-thread receive buffer: big reads keep syscalls per byte low at 10+ Gbit/s.
pub const SCRATCH_LEN: usize = 256 * 1024;

struct Pattern {
    bytes: Box<[u8]>,
    /// CRC state of the whole pattern once, the unit that [`expected_from`] repeats.
    whole: crc32fast::Hasher,
}

fn pattern_state() -> &'static Pattern {
    static PATTERN: OnceLock<Pattern> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut bytes = vec![0_u8; PATTERN_LEN].into_boxed_slice();
        rand::rngs::StdRng::seed_from_u64(PATTERN_SEED).fill_bytes(&mut bytes);
        let mut whole = crc32fast::Hasher::new();
        whole.update(&bytes);
        Pattern { bytes, whole }
    })
}

/// The pattern senders cycle through.
pub fn pattern() -> &'static [u8] {
    &pattern_state().bytes
}

/// `len` bytes of the cycled stream from `start`, as a sequence of slices of the pattern.
#[derive(Clone, Debug)]
pub struct Source {
    offset: usize,
    remaining: u64,
}

impl Source {
    pub fn new(start: u64, len: u64) -> Self {
        Self {
            offset: offset_in_pattern(start),
            remaining: len,
        }
    }

    /// The next bytes to send (empty once all are sent); call [`Source::consume`] with how
    /// many of them were written.
    pub fn chunk(&self) -> &'static [u8] {
        let len =
            (PATTERN_LEN - self.offset).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        &pattern()[self.offset..self.offset + len]
    }

    pub fn consume(&mut self, written: usize) {
        assert!(
            written as u64 <= self.remaining,
            "consumed more than the source holds"
        );
        self.remaining -= written as u64;
        self.offset = (self.offset + written) % PATTERN_LEN;
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The rest of the stream, materialized (tests compare against it).
    #[cfg(test)]
    pub fn collect(mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while self.remaining() > 0 {
            let chunk = self.chunk();
            bytes.extend_from_slice(chunk);
            self.consume(chunk.len());
        }
        bytes
    }
}

/// Writes all of `source`, straight from the pattern.
pub async fn send(writer: &mut (impl AsyncWrite + Unpin), mut source: Source) -> io::Result<()> {
    while source.remaining() > 0 {
        let written = writer.write(source.chunk()).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        source.consume(written);
    }
    Ok(())
}

/// Byte count and CRC-32 of a stream: what the receiving end reports and checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub crc: u32,
}

impl Summary {
    /// The wire form: count as u64 then CRC as u32, both big-endian.
    pub fn to_wire(self) -> [u8; SUMMARY_LEN] {
        let mut out = [0_u8; SUMMARY_LEN];
        out[..8].copy_from_slice(&self.bytes.to_be_bytes());
        out[8..].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    pub fn from_wire(wire: [u8; SUMMARY_LEN]) -> Self {
        let (bytes, crc) = wire.split_at(8);
        Self {
            bytes: u64::from_be_bytes(bytes.try_into().expect("8 bytes")),
            crc: u32::from_be_bytes(crc.try_into().expect("4 bytes")),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes with CRC-32 {:08x}", self.bytes, self.crc)
    }
}

/// Running [`Summary`] of the bytes received so far.
#[derive(Clone, Debug, Default)]
pub struct Checksum {
    bytes: u64,
    hasher: crc32fast::Hasher,
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.hasher.update(bytes);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn summary(&self) -> Summary {
        Summary {
            bytes: self.bytes,
            crc: self.hasher.clone().finalize(),
        }
    }

    /// Checks length and CRC against what the sender sent.
    pub fn verify(&self, expected: Summary) -> Result<(), Mismatch> {
        check(self.summary(), expected)
    }
}

/// Received bytes that are not the bytes sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub got: Summary,
    pub expected: Summary,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "received {}, sent {}", self.got, self.expected)
    }
}

impl std::error::Error for Mismatch {}

/// Compares a received summary (e.g. the backend's) with the expected one.
pub fn check(got: Summary, expected: Summary) -> Result<(), Mismatch> {
    if got == expected {
        Ok(())
    } else {
        Err(Mismatch { got, expected })
    }
}

/// The summary of the first `len` bytes of the cycled stream.
pub fn expected(len: u64) -> Summary {
    expected_from(0, len)
}

/// The summary of `len` bytes of the cycled stream from `start`, in microseconds whatever the
/// length: whole repetitions of the pattern are combined (`crc32fast::Hasher::combine`), not
/// hashed again, so a receiver can verify gigabytes the moment the last byte arrives.
pub fn expected_from(start: u64, len: u64) -> Summary {
    let state = pattern_state();
    let offset = offset_in_pattern(start);
    let head_len = (PATTERN_LEN - offset).min(usize::try_from(len).unwrap_or(usize::MAX));
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&state.bytes[offset..offset + head_len]);
    let rest = len - head_len as u64;
    hasher.combine(&repeated(&state.whole, rest / PATTERN_LEN as u64));
    let tail_len = usize::try_from(rest % PATTERN_LEN as u64).expect("less than PATTERN_LEN");
    let mut tail = crc32fast::Hasher::new();
    tail.update(&state.bytes[..tail_len]);
    hasher.combine(&tail);
    Summary {
        bytes: len,
        crc: hasher.finalize(),
    }
}

/// The CRC state of `unit` repeated `times` times, by doubling.
fn repeated(unit: &crc32fast::Hasher, mut times: u64) -> crc32fast::Hasher {
    let mut result = crc32fast::Hasher::new();
    let mut power = unit.clone();
    while times > 0 {
        if times & 1 == 1 {
            result.combine(&power);
        }
        times >>= 1;
        if times > 0 {
            let copy = power.clone();
            power.combine(&copy);
        }
    }
    result
}

fn offset_in_pattern(start: u64) -> usize {
    usize::try_from(start % PATTERN_LEN as u64).expect("less than PATTERN_LEN")
}

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Waits for one read's worth of bytes and hands them to `consume`: `Ok(None)` at EOF.
/// The bytes live in a per-thread buffer that `consume` must not keep (copy what outlives it).
pub async fn read_chunk<T>(
    reader: &ReadHalf<'_>,
    mut consume: impl FnMut(&[u8]) -> T,
) -> io::Result<Option<T>> {
    loop {
        reader.readable().await?;
        let read = SCRATCH.with_borrow_mut(|buf| match reader.try_read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(consume(&buf[..n]))),
            Err(e) => Err(e),
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Reads into `checksum` until it holds at least `len` bytes (more means the peer sent too
/// much, which the checksum then shows). Fails on an EOF before that.
pub async fn receive_at_least(
    reader: &ReadHalf<'_>,
    checksum: &mut Checksum,
    len: u64,
) -> io::Result<()> {
    while checksum.bytes() < len {
        if read_chunk(reader, |bytes| checksum.update(bytes))
            .await?
            .is_none()
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended after {} of {len} bytes", checksum.bytes()),
            ));
        }
    }
    Ok(())
}

/// Waits for EOF, failing if any byte arrives first: the peer has sent all it should.
pub async fn expect_eof(reader: &ReadHalf<'_>) -> io::Result<()> {
    match read_chunk(reader, |bytes| bytes.len()).await? {
        None => Ok(()),
        Some(extra) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{extra} or more bytes past the end of the stream"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cycled stream, the slow obvious way.
    fn brute_force(start: u64, len: u64) -> Summary {
        let mut checksum = Checksum::default();
        let mut source = Source::new(start, len);
        while source.remaining() > 0 {
            let chunk = source.chunk();
            checksum.update(chunk);
            source.consume(chunk.len());
        }
        checksum.summary()
    }

    #[test]
    fn pattern_is_deterministic_and_not_trivial() {
        let first = pattern();
        assert_eq!(first.len(), PATTERN_LEN);
        let mut again = vec![0_u8; PATTERN_LEN];
        rand::rngs::StdRng::seed_from_u64(PATTERN_SEED).fill_bytes(&mut again);
        assert_eq!(first, &again[..]);
        assert!(first.windows(2).filter(|w| w[0] == w[1]).count() < PATTERN_LEN / 100);
    }

    #[test]
    fn expected_matches_the_cycled_stream() {
        let p = PATTERN_LEN as u64;
        let cases = [
            (0, 0),
            (0, 1),
            (0, p - 1),
            (0, p),
            (0, p + 1),
            (0, 3 * p + 12_345),
            (17, 5),
            (p - 2, 7),
            (p + 5, 2 * p),
            (123_456, 4 * p - 1),
        ];
        for (start, len) in cases {
            assert_eq!(
                expected_from(start, len),
                brute_force(start, len),
                "start {start} len {len}"
            );
        }
        assert_eq!(expected(p + 9), brute_force(0, p + 9));
    }

    #[test]
    fn expected_is_fast_for_huge_streams() {
        let started = std::time::Instant::now();
        let summary = expected(1 << 40);
        assert_eq!(summary.bytes, 1 << 40);
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn checksum_is_incremental_and_catches_one_flipped_bit() {
        let bytes = &pattern()[..100_000];
        let mut whole = Checksum::default();
        whole.update(bytes);
        let mut pieces = Checksum::default();
        for piece in bytes.chunks(999) {
            pieces.update(piece);
        }
        assert_eq!(whole.summary(), pieces.summary());
        assert_eq!(whole.verify(expected(100_000)), Ok(()));

        let mut flipped = bytes.to_vec();
        flipped[54_321] ^= 0x10;
        let mut bad = Checksum::default();
        bad.update(&flipped);
        assert!(bad.verify(expected(100_000)).is_err());

        let mut short = Checksum::default();
        short.update(&bytes[..99_999]);
        assert!(short.verify(expected(100_000)).is_err());
    }

    #[test]
    fn summary_wire_form_round_trips() {
        let summary = Summary {
            bytes: 0x0102_0304_0506_0708,
            crc: 0xdead_beef,
        };
        let wire = summary.to_wire();
        assert_eq!(wire, [1, 2, 3, 4, 5, 6, 7, 8, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Summary::from_wire(wire), summary);
    }

    #[test]
    fn source_cycles_and_stops() {
        let mut source = Source::new(PATTERN_LEN as u64 - 4, 10);
        assert_eq!(source.chunk(), &pattern()[PATTERN_LEN - 4..]);
        source.consume(4);
        assert_eq!(source.chunk(), &pattern()[..6]);
        source.consume(6);
        assert!(source.chunk().is_empty());
    }
}

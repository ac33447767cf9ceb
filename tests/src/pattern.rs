//! A byte stream in which every 8-byte word says where it belongs, so a reader can check
//! each byte by position and, when one is wrong, say what arrived instead: a repeat of
//! earlier bytes (duplication), a skip ahead (loss), or bytes that are not from the stream.
//!
//! Word `k` (bytes `8k..8k+8`) is `k * MULTIPLIER + seed` (wrapping, little-endian).
//! `MULTIPLIER` is odd, so the map is a bijection on `u64`: any 8 bytes that were written
//! as one word decode to the position they were written at.

use std::fmt;

/// An odd constant (the 64-bit golden ratio), so every word is distinct and invertible.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// The stream of one seed.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    seed: u64,
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn word(self, index: u64) -> u64 {
        index.wrapping_mul(MULTIPLIER).wrapping_add(self.seed)
    }

    /// The position whose word is `word`.
    fn index_of(self, word: u64) -> u64 {
        word.wrapping_sub(self.seed)
            .wrapping_mul(inverse(MULTIPLIER))
    }

    /// Fills `buf` with the stream's bytes from `offset` on.
    pub fn fill(self, offset: u64, buf: &mut [u8]) {
        let mut at = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let word = self.word(at / 8).to_le_bytes();
            let skip = (at % 8) as usize;
            let take = (8 - skip).min(rest.len());
            rest[..take].copy_from_slice(&word[skip..skip + take]);
            rest = &mut rest[take..];
            at += take as u64;
        }
    }

    /// A checker for a reader of this stream.
    pub fn checker(self) -> Checker {
        Checker {
            pattern: self,
            offset: 0,
            expected: Vec::new(),
        }
    }
}

/// The multiplicative inverse of an odd `a` modulo 2^64 (Newton's iteration).
const fn inverse(a: u64) -> u64 {
    let mut x = a; // correct to 3 bits for any odd a
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Checks a stream of [`Pattern`] bytes as it arrives, in reads of any size.
pub struct Checker {
    pattern: Pattern,
    /// Bytes checked so far: the stream offset of the next byte.
    offset: u64,
    expected: Vec<u8>,
}

/// Where the bytes found at a wrong offset belong in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameFrom {
    /// They are the stream's bytes from this offset on.
    Offset(u64),
    /// They are not the stream's bytes at any offset.
    Foreign,
    /// Too few bytes arrived after the wrong one (in the same read) to tell.
    Unknown,
}

/// The first wrong byte of a stream, and what arrived there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Stream offset of the first wrong byte.
    pub offset: u64,
    pub expected: u8,
    pub got: u8,
    /// Where the bytes arriving at `offset` belong: below `offset` means earlier bytes
    /// came again, above it that bytes were skipped.
    pub came_from: CameFrom,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "first wrong byte at offset {} (expected {:#04x}, got {:#04x})",
            self.offset, self.expected, self.got
        )?;
        match self.came_from {
            CameFrom::Offset(from) if from < self.offset => write!(
                f,
                "; the bytes there belong at offset {from}: {} bytes came twice",
                self.offset - from
            ),
            CameFrom::Offset(from) => write!(
                f,
                "; the bytes there belong at offset {from}: {} bytes were skipped",
                from - self.offset
            ),
            CameFrom::Foreign => write!(f, "; they are not from this stream"),
            CameFrom::Unknown => write!(f, "; too few bytes after it to tell where they belong"),
        }
    }
}

/// Bytes after a wrong one that must agree with the stream from some offset before we say
/// they came from there.
const DECODE_BYTES: usize = 32;

impl Checker {
    /// Bytes checked (and correct) so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Checks `bytes`, the next bytes of the stream. On the first wrong byte, returns where
    /// it is and where the bytes found there belong.
    pub fn check(&mut self, bytes: &[u8]) -> Result<(), Mismatch> {
        self.expected.resize(bytes.len(), 0);
        self.pattern.fill(self.offset, &mut self.expected);
        if let Some(at) = bytes.iter().zip(&self.expected).position(|(a, b)| a != b) {
            return Err(Mismatch {
                offset: self.offset + at as u64,
                expected: self.expected[at],
                got: bytes[at],
                came_from: self.pattern.locate(&bytes[at..]),
            });
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

impl Pattern {
    /// The stream offset `found` starts at, if its first [`DECODE_BYTES`] are the stream's.
    /// Some aligned word lies within its first 8 bytes: decode it, then confirm.
    fn locate(self, found: &[u8]) -> CameFrom {
        let Some(found) = found.get(..DECODE_BYTES) else {
            return CameFrom::Unknown;
        };
        let mut candidate = vec![0; DECODE_BYTES];
        for shift in 0..8 {
            let word: [u8; 8] = found[shift..shift + 8].try_into().expect("8 bytes");
            let Some(origin) = self
                .index_of(u64::from_le_bytes(word))
                .checked_mul(8)
                .and_then(|at| at.checked_sub(shift as u64))
            else {
                continue;
            };
            self.fill(origin, &mut candidate);
            if candidate == found {
                return CameFrom::Offset(origin);
            }
        }
        CameFrom::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(seed: u64, from: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        Pattern::new(seed).fill(from, &mut bytes);
        bytes
    }

    #[test]
    fn inverse_is_an_inverse() {
        assert_eq!(MULTIPLIER.wrapping_mul(inverse(MULTIPLIER)), 1);
    }

    #[test]
    fn fill_is_the_same_at_any_split() {
        let whole = stream(7, 0, 1000);
        for split in [1, 3, 8, 13, 999] {
            let mut parts = stream(7, 0, split);
            parts.extend(stream(7, split as u64, 1000 - split));
            assert_eq!(parts, whole, "split at {split}");
        }
    }

    #[test]
    fn a_correct_stream_passes_in_reads_of_any_size() {
        let bytes = stream(42, 0, 100_000);
        let mut checker = Pattern::new(42).checker();
        for chunk in bytes.chunks(977) {
            checker.check(chunk).expect("correct bytes");
        }
        assert_eq!(checker.offset(), 100_000);
    }

    #[test]
    fn a_repeat_names_where_it_came_from() {
        // 100 bytes, then bytes 37.. again: 63 bytes came twice.
        let mut received = stream(5, 0, 100);
        received.extend(stream(5, 37, 200));
        let mut checker = Pattern::new(5).checker();
        checker.check(&received[..100]).expect("first 100 bytes");
        let mismatch = checker.check(&received[100..]).expect_err("a repeat");
        assert_eq!(mismatch.offset, 100);
        assert_eq!(mismatch.came_from, CameFrom::Offset(37));
        assert!(
            mismatch.to_string().contains("63 bytes came twice"),
            "{mismatch}"
        );
    }

    #[test]
    fn a_gap_names_how_much_was_skipped() {
        let mut received = stream(5, 0, 64);
        received.extend(stream(5, 4096 + 3, 100));
        let mismatch = Pattern::new(5)
            .checker()
            .check(&received)
            .expect_err("a gap");
        assert_eq!(mismatch.offset, 64);
        assert_eq!(mismatch.came_from, CameFrom::Offset(4096 + 3));
    }

    #[test]
    fn foreign_bytes_are_named_as_such() {
        let mut received = stream(5, 0, 16);
        received.extend([0xAB; 32]);
        let mismatch = Pattern::new(5)
            .checker()
            .check(&received)
            .expect_err("foreign bytes");
        assert_eq!(mismatch.offset, 16);
        assert_eq!(mismatch.came_from, CameFrom::Foreign);
    }
}

//! Large messages echoed one at a time through one tunnel: what a client that sends a
//! message of megabytes and waits for the whole echo sees, per exchange.
//!
//! Unlike bulk, the flow stops after every message: each exchange starts from idle queues,
//! so a path whose cost is in starting or draining a burst (a pause, a timer, a budget that
//! trips) shows here even when its steady throughput is fine.
//!
//! The client writes and reads at once (split halves joined in one task, as bulk does): the
//! echo starts coming back before the message is fully sent, and writing all of it before
//! reading would stall for good once both directions' socket buffers are full.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use tokio::net::tcp::ReadHalf;

use super::{connect::connect, end::close};
use crate::{
    payload::{self, Source},
    wire::Mode,
};

/// How far apart in the payload pattern consecutive messages start. Messages are longer than
/// the pattern, so each is a different rotation of it; a prime step lines up with no buffer
/// size, so a stale echo, or one shifted by a lost or repeated buffer, does not pass.
const MESSAGE_STRIDE: u64 = 65_521;

/// Over one `echo` tunnel, `warmup` unmeasured then `count` measured exchanges of one
/// `size`-byte message each: write it, and read its echo meanwhile, until all `size` bytes
/// are back. Returns the time of each measured exchange, from the first byte written to the
/// last echoed byte verified. Every echoed byte is compared with the byte sent, as it
/// arrives; the first that differs (or any byte past the end of a message) fails the run.
pub async fn messages(
    target: SocketAddr,
    size: u64,
    warmup: u64,
    count: u64,
) -> anyhow::Result<Vec<Duration>> {
    let (mut stream, leftover) = connect(target, Mode::Echo).await?;
    ensure!(
        leftover.is_empty(),
        "upgrade to {} at {target}: {} bytes arrived before any was sent",
        Mode::Echo,
        leftover.len()
    );
    let (reader, mut writer) = stream.split();
    let mut times = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for exchange in 0..warmup + count {
        let start = exchange * MESSAGE_STRIDE;
        let stage =
            |stage: &str| format!("{stage} (message {exchange}, {size} bytes) with {target}");
        let mut echo = Echo::new(start, size);
        let started = Instant::now();
        // `try_join`: a mismatch ends the exchange at once instead of waiting for a send that
        // can no longer finish, since nothing reads the echo any more.
        tokio::try_join!(
            async {
                payload::send(&mut writer, Source::new(start, size))
                    .await
                    .with_context(|| stage("transfer"))
            },
            receive(&reader, &mut echo, &stage),
        )?;
        let elapsed = started.elapsed();
        if exchange >= warmup {
            times.push(elapsed);
        }
    }
    // An echo tunnel may be half-closed first: the backend echoes all it read, then closes.
    close(&reader, &mut writer, target).await?;
    Ok(times)
}

/// Reads until `echo` has all of its message; an EOF before that is a transfer failure, a
/// byte that differs a verification failure, each named by `stage`.
async fn receive(
    reader: &ReadHalf<'_>,
    echo: &mut Echo,
    stage: &impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    while !echo.is_complete() {
        match payload::read_chunk(reader, |bytes| echo.feed(bytes))
            .await
            .with_context(|| stage("transfer"))?
        {
            Some(checked) => checked.with_context(|| stage("verify"))?,
            None => bail!(
                "{}: stream ended after {} of the echo's {} bytes",
                stage("transfer"),
                echo.received,
                echo.len
            ),
        }
    }
    Ok(())
}

/// One message's echo, checked byte for byte against the message as it arrives.
struct Echo {
    /// The bytes still expected: the rest of the message sent.
    expected: Source,
    received: u64,
    len: u64,
}

impl Echo {
    fn new(start: u64, len: u64) -> Self {
        Self {
            expected: Source::new(start, len),
            received: 0,
            len,
        }
    }

    fn is_complete(&self) -> bool {
        self.expected.remaining() == 0
    }

    /// Compares `bytes` with the next bytes of the message; fails at the first that differs,
    /// or on bytes past the message's end (nothing else was sent).
    fn feed(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        while !bytes.is_empty() {
            let expected = self.expected.chunk();
            ensure!(
                !expected.is_empty(),
                "{} or more bytes past the end of the {}-byte message",
                bytes.len(),
                self.len
            );
            let take = expected.len().min(bytes.len());
            let (got, rest) = bytes.split_at(take);
            if got != &expected[..take] {
                let at = got
                    .iter()
                    .zip(expected)
                    .position(|(got, sent)| got != sent)
                    .unwrap_or(0);
                bail!(
                    "byte {} of the echo is {:#04x}, the message had {:#04x} there",
                    self.received + at as u64,
                    got[at],
                    expected[at]
                );
            }
            self.expected.consume(take);
            self.received += take as u64;
            bytes = rest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PATTERN_LEN;

    /// The message that starts at `start`, materialized.
    fn message(start: u64, len: u64) -> Vec<u8> {
        Source::new(start, len).collect()
    }

    #[test]
    fn echo_accepts_the_message_in_any_pieces() {
        let len = PATTERN_LEN as u64 + 1_000;
        let sent = message(MESSAGE_STRIDE, len);
        let mut echo = Echo::new(MESSAGE_STRIDE, len);
        for piece in sent.chunks(77_777) {
            assert!(!echo.is_complete());
            echo.feed(piece).expect("the echo is the message");
        }
        assert!(echo.is_complete());
        assert_eq!(echo.received, len);
    }

    #[test]
    fn echo_names_the_first_wrong_byte_and_refuses_extra_ones() {
        let sent = message(0, 5_000);
        let mut damaged = sent.clone();
        damaged[4_321] ^= 0x01;
        let mut echo = Echo::new(0, 5_000);
        echo.feed(&damaged[..4_000]).expect("intact so far");
        let error = echo.feed(&damaged[4_000..]).expect_err("a flipped bit");
        assert!(format!("{error}").starts_with("byte 4321 "), "{error}");

        let mut echo = Echo::new(0, 5_000);
        let mut longer = sent.clone();
        longer.push(0);
        let error = echo.feed(&longer).expect_err("one byte too many");
        assert!(format!("{error}").contains("past the end"), "{error}");
    }

    #[test]
    fn the_previous_message_is_not_this_one() {
        let len = 3 * PATTERN_LEN as u64;
        let previous = message(0, len);
        let mut echo = Echo::new(MESSAGE_STRIDE, len);
        assert!(echo.feed(&previous).is_err(), "a stale echo must not pass");
    }
}

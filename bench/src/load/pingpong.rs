//! Round-trip latency of small messages through one tunnel.
//!
//! Blocking sockets on the caller's thread, one message in flight: the time measured is the
//! path's, not a scheduler's, and the caller can pin the thread to a CPU.
use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use hdrhistogram::Histogram;

use super::{connect::connect_blocking, end::expect_eof_blocking};
use crate::{
    payload::{self, PATTERN_LEN},
    wire::Mode,
};

/// Size of one message, each way.
pub const MESSAGE_LEN: usize = 64;

/// Highest round trip the histogram tracks exactly; slower ones are recorded as this.
const MAX_ROUND_TRIP: Duration = Duration::from_secs(60);

/// Three significant digits: sub-microsecond resolution at loopback latencies.
const SIGNIFICANT_DIGITS: u8 = 3;

/// 64-byte messages over an `echo` tunnel, TCP_NODELAY; `warmup` unmeasured round trips,
/// then `count` measured. Returns a histogram of round-trip times in nanoseconds. Every
/// echoed message must equal what was sent; each message is a different slice of the
/// payload pattern, so a stale or misrouted echo does not pass.
pub fn pingpong(target: SocketAddr, warmup: u64, count: u64) -> anyhow::Result<Histogram<u64>> {
    let max_ns = u64::try_from(MAX_ROUND_TRIP.as_nanos()).expect("60 s fits in u64 nanoseconds");
    let mut histogram = Histogram::<u64>::new_with_bounds(1, max_ns, SIGNIFICANT_DIGITS)
        .context("create the latency histogram")?;
    let (mut stream, leftover) = connect_blocking(target, Mode::Echo)?;
    ensure!(
        leftover.is_empty(),
        "upgrade to {} at {target}: {} bytes arrived before any was sent",
        Mode::Echo,
        leftover.len()
    );
    let messages = ((PATTERN_LEN - MESSAGE_LEN) / MESSAGE_LEN) as u64;
    let mut echoed = [0_u8; MESSAGE_LEN];
    for round_trip in 0..warmup + count {
        let offset = (round_trip % messages) as usize * MESSAGE_LEN;
        let message = &payload::pattern()[offset..offset + MESSAGE_LEN];
        let stage = |stage: &str| format!("{stage} (round trip {round_trip}) with {target}");
        let sent_at = Instant::now();
        stream
            .write_all(message)
            .with_context(|| stage("transfer"))?;
        stream
            .read_exact(&mut echoed)
            .with_context(|| stage("transfer"))?;
        let round_trip_time = sent_at.elapsed();
        ensure!(
            echoed == message,
            "{}: the echo differs from the message sent",
            stage("verify")
        );
        if round_trip >= warmup {
            histogram
                .saturating_record(u64::try_from(round_trip_time.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .with_context(|| format!("close (half-close) with {target}"))?;
    expect_eof_blocking(&mut stream).with_context(|| format!("close (EOF) with {target}"))?;
    Ok(histogram)
}

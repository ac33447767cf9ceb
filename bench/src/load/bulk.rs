//! One tunnel moving a large amount of payload: throughput of a path.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use tokio::net::tcp::ReadHalf;

use super::{connect::connect, end::expect_eof};
use crate::{
    model::Direction,
    payload::{self, Checksum, Source, Summary, PATTERN_LEN},
    wire::{Mode, SUMMARY_LEN},
};

/// Where in the pattern the client's upload starts. The backend's bytes start at 0; starting
/// elsewhere means a path that reflects the client's own bytes back fails verification.
const UPLOAD_START: u64 = PATTERN_LEN as u64 / 2;

#[derive(Clone, Copy, Debug)]
pub struct BulkOutcome {
    /// Bytes delivered and verified, both directions together.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// One tunnel, `bytes` each way per direction (Both = bytes up AND bytes down,
/// outcome.bytes = 2*bytes), length+CRC verified at the receiving end (for upload: the
/// backend's summary). Timing starts when the 101 has been received and ends when the last
/// byte/summary is verified.
///
/// After timing, the backend's EOF must follow (no byte past the end); the client never
/// half-closes first, as nginx would then close the tunnel both ways.
pub async fn bulk(
    target: SocketAddr,
    direction: Direction,
    bytes: u64,
) -> anyhow::Result<BulkOutcome> {
    let mode = match direction {
        Direction::Upload => Mode::Sink(bytes),
        Direction::Download => Mode::Source(bytes),
        Direction::Both => Mode::Both(bytes),
    };
    let (mut stream, leftover) = connect(target, mode).await?;
    let started = Instant::now();
    let (reader, mut writer) = stream.split();
    let upload_len = if direction == Direction::Download {
        0
    } else {
        bytes
    };
    let download_len = if direction == Direction::Upload {
        0
    } else {
        bytes
    };
    let mut inbound = Inbound::new(download_len, direction != Direction::Download);
    inbound.feed(&leftover);
    let (sent, received) = tokio::join!(
        payload::send(&mut writer, Source::new(UPLOAD_START, upload_len)),
        receive(&reader, &mut inbound),
    );
    let stage = |stage: &str| format!("{stage} ({}, {mode}) with {target}", direction.label());
    sent.with_context(|| stage("transfer"))?;
    received.with_context(|| stage("transfer"))?;
    inbound
        .verify(upload_len)
        .with_context(|| stage("verify"))?;
    let elapsed = started.elapsed();
    expect_eof(&reader).await.with_context(|| stage("verify"))?;
    Ok(BulkOutcome {
        bytes: upload_len + download_len,
        elapsed,
    })
}

/// Reads into `inbound` until it holds all it expects, or EOF (which `verify` then reports
/// as a short stream).
async fn receive(reader: &ReadHalf<'_>, inbound: &mut Inbound) -> anyhow::Result<()> {
    while !inbound.is_complete() {
        if payload::read_chunk(reader, |bytes| inbound.feed(bytes))
            .await?
            .is_none()
        {
            break;
        }
    }
    Ok(())
}

/// What the backend sends, split as it arrives: `payload_len` payload bytes from the start
/// of the pattern, then (if expected) the summary of what the backend read from us.
struct Inbound {
    payload_len: u64,
    payload: Checksum,
    summary: Vec<u8>,
    summary_len: usize,
    excess: u64,
}

impl Inbound {
    fn new(payload_len: u64, with_summary: bool) -> Self {
        let summary_len = if with_summary { SUMMARY_LEN } else { 0 };
        Self {
            payload_len,
            payload: Checksum::default(),
            summary: Vec::with_capacity(summary_len),
            summary_len,
            excess: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let missing = self.payload_len - self.payload.bytes();
        let take = usize::try_from(missing)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (payload, rest) = bytes.split_at(take);
        self.payload.update(payload);
        let take = (self.summary_len - self.summary.len()).min(rest.len());
        let (summary, rest) = rest.split_at(take);
        self.summary.extend_from_slice(summary);
        self.excess += rest.len() as u64;
    }

    fn is_complete(&self) -> bool {
        self.payload.bytes() == self.payload_len && self.summary.len() == self.summary_len
    }

    /// Checks the payload received and, if a summary was expected, that the backend read
    /// exactly the `uploaded` bytes we sent.
    fn verify(&self, uploaded: u64) -> anyhow::Result<()> {
        ensure!(
            self.excess == 0,
            "{} bytes past the end of the stream",
            self.excess
        );
        self.payload
            .verify(payload::expected(self.payload_len))
            .context("payload from the backend")?;
        if self.summary_len == 0 {
            return Ok(());
        }
        let summary: [u8; SUMMARY_LEN] = self.summary.as_slice().try_into().with_context(|| {
            format!(
                "the backend's summary: stream ended after {} of its {SUMMARY_LEN} bytes",
                self.summary.len()
            )
        })?;
        payload::check(
            Summary::from_wire(summary),
            payload::expected_from(UPLOAD_START, uploaded),
        )
        .context("payload to the backend, as the backend reports it")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_splits_payload_summary_and_excess() {
        let mut inbound = Inbound::new(5, true);
        let mut stream = payload::pattern()[..5].to_vec();
        stream.extend_from_slice(&payload::expected_from(UPLOAD_START, 7).to_wire());
        for piece in stream.chunks(3) {
            assert!(!inbound.is_complete());
            inbound.feed(piece);
        }
        assert!(inbound.is_complete());
        inbound.verify(7).expect("payload and summary match");
        assert!(
            inbound.verify(8).is_err(),
            "summary of 7 bytes must not pass for 8"
        );
        inbound.feed(b"x");
        assert!(
            inbound.verify(7).is_err(),
            "a byte past the summary must fail"
        );
    }

    #[test]
    fn inbound_refuses_short_payload_and_short_summary() {
        let mut inbound = Inbound::new(4, false);
        inbound.feed(&payload::pattern()[..3]);
        let error = inbound.verify(0).expect_err("payload is cut short");
        assert!(
            format!("{error:#}").contains("payload from the backend"),
            "{error:#}"
        );

        let mut inbound = Inbound::new(0, true);
        inbound.feed(&[0; SUMMARY_LEN - 1]);
        let error = inbound.verify(0).expect_err("summary is cut short");
        assert!(format!("{error:#}").contains("summary"), "{error:#}");
    }
}

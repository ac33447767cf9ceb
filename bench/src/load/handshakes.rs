//! Short-lived tunnels: connect, upgrade, one echo, close, as fast as a path allows.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use tokio::task::JoinSet;

use super::{connect::connect, end::close};
use crate::{
    payload::{self, Checksum, Source},
    wire::Mode,
};

/// Bytes echoed by every tunnel.
const MESSAGE_LEN: u64 = 64;

/// One attempt that takes longer is a failure; it must not stall its worker for the rest
/// of the run.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct HandshakeOutcome {
    pub completed: u64,
    pub failed: u64,
    /// From the first worker to stop (once `duration` is over) to the last.
    pub elapsed: Duration,
    /// What went wrong in the first failed attempt, stage and target included.
    pub first_failure: Option<String>,
}

/// For `duration`, `concurrency` workers loop: connect, upgrade (`echo`), send 64 bytes,
/// read them back and compare, close. Counts completed and failed attempts (a failure never
/// stops the run). Attempts begun before the end of `duration` are finished and counted;
/// `elapsed` covers them.
pub async fn handshakes(
    target: SocketAddr,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<HandshakeOutcome> {
    ensure!(
        concurrency > 0,
        "handshakes with {target}: concurrency must be at least 1"
    );
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut attempt = 0_u64;
            while Instant::now() < deadline {
                let start = (worker as u64)
                    .wrapping_mul(1 << 20)
                    .wrapping_add(attempt * MESSAGE_LEN);
                attempt += 1;
                match tokio::time::timeout(ATTEMPT_TIMEOUT, one(target, start)).await {
                    Ok(Ok(())) => tally.completed += 1,
                    Ok(Err(e)) => tally.fail(format!("{e:#}")),
                    Err(_) => tally.fail(format!(
                        "attempt with {target} took longer than {ATTEMPT_TIMEOUT:?}"
                    )),
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a handshake worker panicked")?;
        total.completed += tally.completed;
        total.failed += tally.failed;
        total.first_failure = total.first_failure.or(tally.first_failure);
    }
    Ok(HandshakeOutcome {
        completed: total.completed,
        failed: total.failed,
        elapsed: started.elapsed(),
        first_failure: total.first_failure,
    })
}

#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }
}

/// One short-lived tunnel, from connect to the backend's EOF.
async fn one(target: SocketAddr, start: u64) -> anyhow::Result<()> {
    let (mut stream, leftover) = connect(target, Mode::Echo).await?;
    let mut checksum = Checksum::default();
    checksum.update(&leftover);
    let (reader, mut writer) = stream.split();
    let transfer = || format!("transfer (echo) with {target}");
    payload::send(&mut writer, Source::new(start, MESSAGE_LEN))
        .await
        .with_context(transfer)?;
    payload::receive_at_least(&reader, &mut checksum, MESSAGE_LEN)
        .await
        .with_context(transfer)?;
    checksum
        .verify(payload::expected_from(start, MESSAGE_LEN))
        .with_context(|| format!("verify (echo) with {target}"))?;
    close(&reader, &mut writer, target).await
}

//! Many tunnels open at once: what a path costs per open tunnel, and how it shares its
//! throughput among them.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use tokio::{io::AsyncWriteExt as _, net::TcpStream, task::JoinSet};

use super::{connect::connect, end::expect_eof};
use crate::{
    payload::{self, Checksum, Source, Summary},
    wire::Mode,
};

/// Bytes of the probe that proves each new tunnel echoes.
const PROBE_LEN: u64 = 32;

/// The probe counts as the first exchange when choosing where in the pattern bytes start.
const PROBE_EXCHANGE: u64 = 0;

/// Client sockets of `echo` tunnels, all upgraded and probed.
#[derive(Debug)]
pub struct OpenTunnels {
    target: SocketAddr,
    tunnels: Vec<TcpStream>,
    /// Number of the next exchange; each starts every tunnel at a new place in the pattern.
    exchanges: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct ExchangeOutcome {
    /// Bytes moved and verified by all tunnels, both directions together.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Opens `tunnels` echo tunnels, at most `connecting` upgrades in flight; every tunnel is
/// checked with a small echoed probe before this returns. Fails with a clear error if any
/// fails (the others are then closed).
pub async fn open(
    target: SocketAddr,
    tunnels: usize,
    connecting: usize,
) -> anyhow::Result<OpenTunnels> {
    ensure!(
        connecting > 0,
        "open {tunnels} tunnels to {target}: at least one must connect at a time"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..connecting.min(tunnels) {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut opened = Vec::new();
            loop {
                let tunnel = next.fetch_add(1, Ordering::Relaxed);
                if tunnel >= tunnels {
                    return anyhow::Ok(opened);
                }
                let stream = open_one(target, tunnel)
                    .await
                    .with_context(|| format!("tunnel {tunnel} of {tunnels}"))?;
                opened.push((tunnel, stream));
            }
        });
    }
    let mut opened = Vec::with_capacity(tunnels);
    while let Some(joined) = workers.join_next().await {
        opened.extend(joined.context("a task opening tunnels panicked")??);
    }
    opened.sort_unstable_by_key(|(tunnel, _)| *tunnel);
    let tunnels = opened.into_iter().map(|(_, stream)| stream).collect();
    Ok(OpenTunnels {
        target,
        tunnels,
        exchanges: PROBE_EXCHANGE + 1,
    })
}

/// Opens one tunnel and checks that it echoes a probe of its own, so two tunnels crossed
/// inside the path are caught now rather than counted as open.
async fn open_one(target: SocketAddr, tunnel: usize) -> anyhow::Result<TcpStream> {
    let (mut stream, leftover) = connect(target, Mode::Echo).await?;
    let start = start_in_pattern(tunnel, PROBE_EXCHANGE);
    let mut checksum = Checksum::default();
    checksum.update(&leftover);
    let (reader, mut writer) = stream.split();
    let (sent, received) = tokio::join!(
        payload::send(&mut writer, Source::new(start, PROBE_LEN)),
        payload::receive_at_least(&reader, &mut checksum, PROBE_LEN),
    );
    sent.and(received)
        .with_context(|| format!("transfer (probe) with {target}"))?;
    checksum
        .verify(payload::expected_from(start, PROBE_LEN))
        .with_context(|| format!("verify (probe) with {target}"))?;
    Ok(stream)
}

/// Where `tunnel` starts in the pattern in one exchange: apart from every other tunnel, so a
/// tunnel that receives another's bytes fails verification.
fn start_in_pattern(tunnel: usize, exchange: u64) -> u64 {
    const TUNNEL_STRIDE: u64 = 4099;
    const EXCHANGE_STRIDE: u64 = 7919;
    (tunnel as u64)
        .wrapping_mul(TUNNEL_STRIDE)
        .wrapping_add(exchange.wrapping_mul(EXCHANGE_STRIDE))
}

impl OpenTunnels {
    pub fn len(&self) -> usize {
        self.tunnels.len()
    }

    /// Every tunnel at once writes `bytes_each_way` payload bytes and reads them echoed back,
    /// verifying length+CRC per tunnel; outcome.bytes = total bytes moved both directions.
    pub async fn exchange(&mut self, bytes_each_way: u64) -> anyhow::Result<ExchangeOutcome> {
        let exchange = self.exchanges;
        self.exchanges += 1;
        let target = self.target;
        // What every tunnel must get back, computed before the clock starts: hashing it
        // costs as much as checking the echo itself.
        let planned: Vec<_> = (self.tunnels.drain(..).enumerate())
            .map(|(tunnel, stream)| {
                let start = start_in_pattern(tunnel, exchange);
                let expected = payload::expected_from(start, bytes_each_way);
                (tunnel, stream, start, expected)
            })
            .collect();
        let mut slots: Vec<Option<TcpStream>> = Vec::with_capacity(planned.len());
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        for (tunnel, mut stream, start, expected) in planned {
            slots.push(None);
            tasks.spawn(async move {
                let result = echo_through(&mut stream, start, expected)
                    .await
                    .with_context(|| format!("tunnel {tunnel} with {target}"));
                (tunnel, stream, result)
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (tunnel, stream, result) = joined.context("an exchanging task panicked")?;
            slots[tunnel] = Some(stream);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        let elapsed = started.elapsed();
        self.tunnels = slots.into_iter().flatten().collect();
        if let Some(e) = first_error {
            return Err(e);
        }
        let moved = 2 * bytes_each_way * self.len() as u64;
        Ok(ExchangeOutcome {
            bytes: moved,
            elapsed,
        })
    }

    /// Half-closes every tunnel and waits for the backend's EOF through the path.
    pub async fn close(self) -> anyhow::Result<()> {
        let target = self.target;
        let mut tasks = JoinSet::new();
        for (tunnel, mut stream) in self.tunnels.into_iter().enumerate() {
            tasks.spawn(async move {
                let (reader, mut writer) = stream.split();
                let closed = async {
                    writer.shutdown().await.context("half-close")?;
                    expect_eof(&reader).await
                };
                closed
                    .await
                    .with_context(|| format!("close (tunnel {tunnel}) with {target}"))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("a closing task panicked")??;
        }
        Ok(())
    }
}

/// Sends `expected.bytes` bytes from `start` through one echo tunnel while reading them
/// back, and checks that what came back is `expected`.
async fn echo_through(stream: &mut TcpStream, start: u64, expected: Summary) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.split();
    let mut checksum = Checksum::default();
    let (sent, received) = tokio::join!(
        payload::send(&mut writer, Source::new(start, expected.bytes)),
        payload::receive_at_least(&reader, &mut checksum, expected.bytes),
    );
    sent.and(received).context("transfer (exchange)")?;
    checksum.verify(expected).context("verify (exchange)")?;
    Ok(())
}

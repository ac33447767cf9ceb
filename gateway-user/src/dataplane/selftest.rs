//! The start-up check of the kernel splice: one real tunnel on loopback through the same
//! code every tunnel uses, with bytes queued before the splice, a few MiB each way compared
//! byte for byte, a half-close each way, and a flow-control pause and resume (a small
//! budget, and a backend that reads nothing until the client's direction has paused). The
//! verdict must find every segment in sequence and the integrity witness must agree at the
//! end. A kernel that misbehaves is caught here, at start, not under traffic.

use std::{io, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use gateway_common::counter;

use super::{
    sockopt,
    splice::{witness::Finding, SpliceEnd, SpliceSettings, Spliced},
    EbpfDataplane,
};

/// What the self-test found wrong. Each one keeps the eBPF dataplane out (`auto` relays).
#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// Setting up the check's sockets or moving its bytes failed.
    #[error("{step}: {error}")]
    Io {
        step: &'static str,
        error: io::Error,
    },
    #[error("splice refused: {0}")]
    Refused(io::Error),
    #[error(
        "the verdict found {0} segments out of sequence: this kernel keeps TCP sequence \
         numbers elsewhere than the program reads them (sk_buff cb at byte {offset})",
        offset = gateway_common::SKB_CB_OFFSET
    )]
    OutOfSequence(u64),
    #[error("the integrity witness reset the tunnel: {0}")]
    Integrity(Finding),
    #[error("{direction}: {intact} of {len} bytes arrived intact")]
    Corrupted {
        direction: &'static str,
        intact: usize,
        len: usize,
    },
    /// The tunnel ended some other way than both sides closing.
    #[error("tunnel ended with {0}")]
    Ended(SpliceEnd<std::convert::Infallible>),
    #[error("the client's direction paused {0} times but never resumed splicing")]
    NeverResumed(u64),
    #[error("map entries left behind (PEERS, SPLICED, FLOWS, CONTROL): {0:?}")]
    LeftBehind([usize; 4]),
}

/// Bytes each way (queued-before-splice bytes come on top): more than a spliced socket's
/// receive buffer (8 MiB), so that the client's direction still has bytes to send after
/// its pause has caught up, and resumes.
const PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
const QUEUED_BYTES: usize = 64 * 1024;
const DEADLINE: Duration = Duration::from_secs(10);

/// The budget of the check's tunnel: far below what the client sends, so that its direction
/// pauses while the backend does not read. (Not the configured budget: the check must see a
/// pause and a resume whatever the configuration.)
const BUDGET_BYTES: u64 = 256 * 1024;

/// Receive buffer of the far backend and send buffer of the gateway's socket towards it.
const SMALL_BUFFER_BYTES: u32 = 64 * 1024;

/// Runs the check; `Err` says what went wrong.
pub async fn run(ebpf: &Arc<EbpfDataplane>) -> Result<(), SelfTestError> {
    tokio::time::timeout(DEADLINE, check(ebpf))
        .await
        .map_err(|_| SelfTestError::Timeout(DEADLINE))?
}

async fn check(ebpf: &Arc<EbpfDataplane>) -> Result<(), SelfTestError> {
    let before = ebpf.counters();
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io("bind"))?;
    let addr = listener.local_addr().map_err(io("local addr"))?;
    let mut client_far = TcpStream::connect(addr).await.map_err(io("connect"))?;
    let (client, _) = listener.accept().await.map_err(io("accept"))?;
    // Small buffers between the splice and the backend that does not read, whatever the
    // host's tcp_rmem/tcp_wmem: the client's bytes must back up into the kernel's queue,
    // past the budget, for the direction to pause.
    let backend_far = tokio::net::TcpSocket::new_v4().map_err(io("socket"))?;
    backend_far
        .set_recv_buffer_size(SMALL_BUFFER_BYTES)
        .map_err(io("SO_RCVBUF"))?;
    let mut backend_far = backend_far.connect(addr).await.map_err(io("connect"))?;
    let (backend, _) = listener.accept().await.map_err(io("accept"))?;
    sockopt::set_send_buffer(&backend, SMALL_BUFFER_BYTES).map_err(io("SO_SNDBUF"))?;

    let up = pattern(QUEUED_BYTES + PAYLOAD_BYTES, 7);
    let down = pattern(PAYLOAD_BYTES, 13);
    // Handoff: bytes waiting in the client socket's queue before it is spliced.
    client_far
        .write_all(&up[..QUEUED_BYTES])
        .await
        .map_err(io("write queued"))?;
    wait_queued(&client, QUEUED_BYTES).await?;

    // The budget stays put (no pool to grow from): the pause must come at the budget.
    let settings = SpliceSettings {
        max_backlog_bytes: BUDGET_BYTES,
        sndbuf_bytes: 0,
        backlog_pool_bytes: 0,
    };
    let spliced = Spliced::start(
        ebpf.clone(),
        client.into_std().map_err(io("into_std"))?,
        backend.into_std().map_err(io("into_std"))?,
        &settings,
    )
    .map_err(|refused| SelfTestError::Refused(refused.error))?;
    // No limit of its own: the whole check runs within `DEADLINE`.
    let tunnel = spliced.run(std::future::pending::<std::convert::Infallible>());

    // Client sends and half-closes; the backend reads to EOF, then answers and closes.
    let peers = async {
        let (mut client_read, mut client_write) = client_far.split();
        let send_up = async {
            client_write.write_all(&up[QUEUED_BYTES..]).await?;
            client_write.shutdown().await
        };
        let backend = async {
            // Nothing read until the client's direction has paused: the bytes back up.
            while ebpf.counter(counter::PAUSES) == before[counter::PAUSES as usize] {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut got = Vec::with_capacity(up.len());
            backend_far.read_to_end(&mut got).await?;
            backend_far.write_all(&down).await?;
            backend_far.shutdown().await?;
            Ok::<_, std::io::Error>(got)
        };
        let mut got_down = Vec::with_capacity(down.len());
        let (sent, got_up, read) =
            tokio::join!(send_up, backend, client_read.read_to_end(&mut got_down));
        sent.map_err(io("client side"))?;
        read.map_err(io("client reads"))?;
        Ok::<_, SelfTestError>((got_up.map_err(io("backend side"))?, got_down))
    };
    let (outcome, peers) = tokio::join!(tunnel, peers);
    // The verdict's own finding first: a kernel that keeps sequence numbers elsewhere
    // makes the witness reset the tunnel, and the peers would only report a reset.
    let moved = |index: u32| ebpf.counter(index).saturating_sub(before[index as usize]);
    let anomalies = moved(counter::SEQ_ANOMALIES);
    if anomalies != 0 {
        return Err(SelfTestError::OutOfSequence(anomalies));
    }
    let end = match outcome.end {
        SpliceEnd::Integrity(wrong) => return Err(SelfTestError::Integrity(wrong)),
        end => end,
    };
    let (got_up, got_down) = peers?;
    for (direction, got, sent) in [
        ("client→backend", &got_up, &up),
        ("backend→client", &got_down, &down),
    ] {
        if got != sent {
            return Err(SelfTestError::Corrupted {
                direction,
                intact: common_prefix(got, sent),
                len: sent.len(),
            });
        }
    }
    if !matches!(end, SpliceEnd::Done) {
        return Err(SelfTestError::Ended(end));
    }
    tracing::debug!(
        pauses = moved(counter::PAUSES),
        resumes = moved(counter::RESUMES),
        passed_bytes = moved(counter::PASSED_BYTES),
        "splice self-test: flow control"
    );
    if moved(counter::RESUMES) == 0 {
        return Err(SelfTestError::NeverResumed(moved(counter::PAUSES)));
    }
    let left = ebpf.entry_counts();
    if left != [0; 4] {
        return Err(SelfTestError::LeftBehind(left));
    }
    Ok(())
}

async fn wait_queued(sock: &TcpStream, bytes: usize) -> Result<(), SelfTestError> {
    let queued = || {
        crate::dataplane::sockopt::tcp_counters(sock)
            .map(|c| c.recv_queue >= bytes as u64)
            .map_err(io("tcp_info"))
    };
    while !queued()? {
        sock.readable().await.map_err(io("readable"))?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Names the step an I/O error happened in.
fn io(step: &'static str) -> impl Fn(io::Error) -> SelfTestError {
    move |error| SelfTestError::Io { step, error }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 11) as u8)
        .collect()
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

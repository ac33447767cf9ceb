//! A tunnel whose bytes the kernel moves: both sockets join the sockmap and userspace only
//! watches for hang-ups, forwards FIN once the redirected bytes have drained, and tears the
//! tunnel down. See docs/dataplane.md for why each step is ordered as it is.

use std::{
    future::Future,
    io,
    net::{Shutdown, TcpStream},
    os::fd::{AsFd, AsRawFd},
    sync::Arc,
    time::Duration,
};

use gateway_common::FlowStats;

use super::{
    limits::{monotonic_coarse_ns, since_ns, Limits},
    watch::HangupWatch,
    CloseReason,
};
use crate::dataplane::{
    sockopt::{self, TcpCounters},
    EbpfDataplane, TunnelKeys,
};

/// First and longest pause between two checks of whether redirected bytes have drained.
const DRAIN_POLL_MIN: Duration = Duration::from_millis(1);
const DRAIN_POLL_MAX: Duration = Duration::from_millis(50);

/// What a spliced tunnel moved, for the close log.
#[derive(Debug)]
pub struct SpliceOutcome {
    pub reason: CloseReason,
    pub client_to_backend: FlowStats,
    pub backend_to_client: FlowStats,
    /// Bytes the verdict left in a socket's own queue that userspace had to forward.
    pub rescued_bytes: u64,
}

/// One direction of the tunnel: bytes arriving on `from` leave through `to`.
struct HalfState {
    /// Bytes userspace had consumed from `from` before the splice began.
    consumed_before: u64,
    /// Bytes written into `to` before the splice began.
    written_before: u64,
    /// `from` has sent FIN.
    eof: bool,
    /// `to` has been shut down for writing (FIN forwarded).
    shut: bool,
}

impl HalfState {
    fn new(from: &TcpCounters, to: &TcpCounters) -> Self {
        Self {
            consumed_before: from.bytes_consumed(),
            written_before: to.bytes_written(),
            eof: false,
            shut: false,
        }
    }

    /// Whether every byte `from` received before its FIN is now in `to`'s send queue.
    /// After the FIN, `bytes_received` counts one extra for it.
    fn drained(&self, from: &TcpCounters, to: &TcpCounters) -> bool {
        let expected = from.bytes_received.saturating_sub(1 + self.consumed_before);
        to.bytes_written().saturating_sub(self.written_before) >= expected
    }
}

/// A failed syscall, and the side of the tunnel it was about (`None`: the gateway's own).
struct Failure {
    side: Option<usize>,
    error: io::Error,
}

impl Failure {
    fn reason(self) -> CloseReason {
        match self.side {
            Some(0) => CloseReason::ClientError(Some(self.error)),
            Some(_) => CloseReason::BackendError(Some(self.error)),
            None => CloseReason::Internal(self.error),
        }
    }
}

fn on(side: usize) -> impl FnOnce(io::Error) -> Failure {
    move |error| Failure {
        side: Some(side),
        error,
    }
}

/// A tunnel registered in the kernel maps. Dropping it takes the tunnel out of the maps
/// (verdict first) and only then closes the sockets, however the tunnel ended.
pub struct Spliced {
    ebpf: Arc<EbpfDataplane>,
    keys: TunnelKeys,
    halves: [HalfState; 2],
    /// [`monotonic_coarse_ns`] when the splice began: activity before any redirect.
    spliced_at_ns: u64,
    // Declared last: fields drop after `Drop::drop` has unspliced.
    client: TcpStream,
    backend: TcpStream,
}

/// The kernel would not splice the tunnel; its sockets are handed back.
pub struct Refused {
    pub client: TcpStream,
    pub backend: TcpStream,
    pub error: io::Error,
    /// Nothing moved in the kernel, so the userspace relay can carry the tunnel. Otherwise
    /// bytes may have been lost with a peer's psock and the tunnel must be reset.
    pub can_relay: bool,
}

impl Spliced {
    /// Reads the baselines and registers the tunnel: from here on the kernel moves its
    /// bytes. The sockets must not have been read from or written to by anyone else since
    /// the handshake, and their receive queues must hold no partly read skb
    /// ([`take_queued`]).
    pub fn start(
        ebpf: Arc<EbpfDataplane>,
        client: TcpStream,
        backend: TcpStream,
    ) -> Result<Self, Refused> {
        let counters =
            sockopt::tcp_counters(&client).and_then(|c| Ok((c, sockopt::tcp_counters(&backend)?)));
        let (c, b) = match counters {
            Ok(counters) => counters,
            Err(error) => {
                return Err(Refused {
                    client,
                    backend,
                    error,
                    can_relay: true,
                })
            }
        };
        match ebpf.splice(&client, &backend) {
            Ok(keys) => Ok(Self {
                halves: [HalfState::new(&c, &b), HalfState::new(&b, &c)],
                spliced_at_ns: monotonic_coarse_ns(),
                ebpf,
                keys,
                client,
                backend,
            }),
            Err(refused) => Err(Refused {
                can_relay: refused.can_relay(),
                error: io::Error::other(refused),
                client,
                backend,
            }),
        }
    }

    /// Runs the tunnel to its end: both sides closed, a failure (both sockets are then
    /// reset), or a limit (both peers then get a FIN).
    pub async fn run(mut self, limits: &Limits) -> SpliceOutcome {
        let socks = [&self.client, &self.backend];
        let mut rescued = 0;
        // Idleness comes from the timestamps the verdict program keeps per direction.
        let (ebpf, keys, spliced_at) = (&self.ebpf, self.keys, self.spliced_at_ns);
        let limit = limits.reached(|| {
            let (up, down) = ebpf.flow_stats(keys);
            since_ns(
                up.last_activity_ns
                    .max(down.last_activity_ns)
                    .max(spliced_at),
            )
        });
        let reason = supervise(socks, &mut self.halves, &mut rescued, limit)
            .await
            .unwrap_or_else(Failure::reason);
        super::close_both(&reason, &self.client, &self.backend);
        let (client_to_backend, backend_to_client) = self.ebpf.flow_stats(self.keys);
        SpliceOutcome {
            reason,
            client_to_backend,
            backend_to_client,
            rescued_bytes: rescued,
        }
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        self.ebpf.unsplice(self.keys);
    }
}

/// Waits for hang-ups and forwards each FIN once its bytes have drained, until both
/// directions are closed (`Done`) or a side fails.
async fn supervise(
    socks: [&TcpStream; 2],
    halves: &mut [HalfState; 2],
    rescued: &mut u64,
    limit: impl Future<Output = CloseReason>,
) -> Result<CloseReason, Failure> {
    tokio::pin!(limit);
    // Segments that arrived before a socket joined the map sit in its receive queue until
    // the next `data_ready`. A receive makes the kernel run the verdict on them now
    // (tcp_bpf_recvmsg_parser); they are redirected, so it normally returns EAGAIN. It may
    // also return a reset that arrived meanwhile: that ends the tunnel like any error.
    for i in 0..2 {
        *rescued += rescue(socks, i)?;
    }

    let watch = HangupWatch::new(socks[0].as_fd(), socks[1].as_fd())
        .map_err(|error| Failure { side: None, error })?;
    let mut pause = DRAIN_POLL_MIN;
    loop {
        // Forward each FIN once everything sent before it has reached the other socket.
        let counters = [
            sockopt::tcp_counters(socks[0]).map_err(on(0))?,
            sockopt::tcp_counters(socks[1]).map_err(on(1))?,
        ];
        for (from, half) in halves.iter_mut().enumerate() {
            let to = 1 - from;
            if half.eof && !half.shut {
                *rescued += rescue(socks, from)?;
                if half.drained(&counters[from], &counters[to]) {
                    tracing::debug!(from, "drained; forwarding FIN");
                    socks[to].shutdown(Shutdown::Write).map_err(on(to))?;
                    half.shut = true;
                }
            }
        }
        if halves.iter().all(|h| h.shut) {
            return Ok(CloseReason::Done);
        }

        let draining = halves.iter().any(|h| h.eof && !h.shut);
        let events = tokio::select! {
            reason = &mut limit => return Ok(reason),
            events = watch.next() => events.map_err(|error| Failure { side: None, error })?,
            () = tokio::time::sleep(pause), if draining => {
                pause = (pause * 2).min(DRAIN_POLL_MAX);
                continue;
            }
        };
        pause = DRAIN_POLL_MIN;
        tracing::debug!(?events, "socket events");
        if let Some(i) = events.iter().position(|e| e.error) {
            let err = sockopt::take_socket_error(socks[i]).map_err(on(i))?;
            return Ok(if i == 0 {
                CloseReason::ClientError(err)
            } else {
                CloseReason::BackendError(err)
            });
        }
        for (half, event) in halves.iter_mut().zip(events) {
            half.eof |= event.read_hangup || event.hangup;
        }
    }
}

/// Reads everything queued on `sock` into `into`, until a read comes back short: only then
/// is it certain that no skb in the receive queue is partly consumed. That matters because
/// the verdict is handed whole skbs (`tcp_read_skb` ignores how much of the head skb was
/// already read), so a partly read skb would have its read bytes redirected a second time.
///
/// Returns `false`, with the queue possibly still holding a partly read skb, if more than
/// `limit` bytes kept arriving: such a tunnel must not be spliced.
pub fn take_queued(sock: &impl AsRawFd, into: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
    let mut buf = [0u8; 64 * 1024];
    let mut taken = 0;
    loop {
        // SAFETY: `buf` is valid for writes of its length. A direct syscall, not tokio's
        // `try_read`, which may answer from its cached readiness without reading.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(true),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
        let n = n as usize;
        into.extend_from_slice(&buf[..n]);
        taken += n;
        if n < buf.len() {
            return Ok(true);
        }
        if taken > limit {
            return Ok(false);
        }
    }
}

/// Receives whatever the verdict left in `socks[from]`'s own queue (nothing, unless a
/// redirect failed) and writes it to the other socket, so no byte is ever stranded.
/// Returns the bytes moved.
fn rescue(socks: [&TcpStream; 2], from: usize) -> Result<u64, Failure> {
    let to = 1 - from;
    let mut moved = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                socks[from].as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(moved),
                io::ErrorKind::Interrupted => continue,
                _ => Err(on(from)(err)),
            };
        }
        if n == 0 {
            return Ok(moved);
        }
        tracing::warn!(
            bytes = n,
            "splice left bytes for userspace; forwarding them"
        );
        write_all_blocking(socks[to], &buf[..n as usize]).map_err(on(to))?;
        moved += n as u64;
    }
}

fn write_all_blocking(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    while !data.is_empty() {
        match (&*to).write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

//! A tunnel whose bytes the kernel moves: both sockets join the sockmap and userspace only
//! watches for hang-ups, forwards FIN once the redirected bytes have drained, and tears the
//! tunnel down. See docs/dataplane.md for why each step is ordered as it is.

use std::{
    io,
    net::{Shutdown, TcpStream},
    os::fd::{AsFd, AsRawFd},
    sync::Arc,
    time::Duration,
};

use gateway_common::FlowStats;

use super::{watch::HangupWatch, CloseReason};
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

/// Splices `client` and `backend` and runs the tunnel to its end. The sockets must not
/// have been read from or written to by anyone else since the handshake.
pub async fn run(
    ebpf: Arc<EbpfDataplane>,
    client: TcpStream,
    backend: TcpStream,
) -> io::Result<SpliceOutcome> {
    let c = sockopt::tcp_counters(&client)?;
    let b = sockopt::tcp_counters(&backend)?;
    let mut halves = [HalfState::new(&c, &b), HalfState::new(&b, &c)];
    let socks = [&client, &backend];

    let keys = ebpf.splice(&client, &backend).map_err(io::Error::other)?;
    let guard = Unsplice { ebpf: &ebpf, keys };

    // Segments that arrived before a socket joined the map sit in its receive queue until
    // the next `data_ready`. A receive makes the kernel run the verdict on them now
    // (tcp_bpf_recvmsg_parser); they are redirected, so it normally returns EAGAIN.
    let mut rescued = 0;
    for i in 0..2 {
        rescued += rescue(socks[i], socks[1 - i])?;
    }

    let watch = HangupWatch::new(client.as_fd(), backend.as_fd())?;
    let mut pause = DRAIN_POLL_MIN;
    let reason = loop {
        // Forward each FIN once everything sent before it has reached the other socket.
        let counters = [
            sockopt::tcp_counters(&client)?,
            sockopt::tcp_counters(&backend)?,
        ];
        for (i, half) in halves.iter_mut().enumerate() {
            let (from, to) = (i, 1 - i);
            if half.eof && !half.shut {
                rescued += rescue(socks[from], socks[to])?;
                if half.drained(&counters[from], &counters[to]) {
                    tracing::debug!(from, from_counters = ?counters[from], to_counters = ?counters[to], consumed_before = half.consumed_before, written_before = half.written_before, "drained; forwarding FIN");
                    socks[to].shutdown(Shutdown::Write)?;
                    half.shut = true;
                }
            }
        }
        if halves.iter().all(|h| h.shut) {
            break CloseReason::Done;
        }

        let draining = halves.iter().any(|h| h.eof && !h.shut);
        let events = tokio::select! {
            events = watch.next() => events?,
            () = tokio::time::sleep(pause), if draining => {
                pause = (pause * 2).min(DRAIN_POLL_MAX);
                continue;
            }
        };
        pause = DRAIN_POLL_MIN;
        tracing::debug!(?events, "socket events");
        if let Some(i) = events.iter().position(|e| e.error) {
            let err = sockopt::take_socket_error(socks[i])?;
            break if i == 0 {
                CloseReason::ClientError(err)
            } else {
                CloseReason::BackendError(err)
            };
        }
        for (half, event) in halves.iter_mut().zip(events) {
            half.eof |= event.read_hangup || event.hangup;
        }
    };

    if !matches!(reason, CloseReason::Done) {
        // One side failed: reset the other rather than leave it hanging.
        for sock in socks {
            let _ = set_linger_zero(sock);
        }
    }
    let (client_to_backend, backend_to_client) = guard.finish();
    Ok(SpliceOutcome {
        reason,
        client_to_backend,
        backend_to_client,
        rescued_bytes: rescued,
    })
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

/// Receives whatever the verdict left in `from`'s own queue (nothing, unless a redirect
/// failed) and writes it to `to`, so no byte is ever stranded. Returns the bytes moved.
fn rescue(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let mut moved = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                from.as_raw_fd(),
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
                _ => Err(err),
            };
        }
        if n == 0 {
            return Ok(moved);
        }
        let chunk = &buf[..n as usize];
        tracing::warn!(
            bytes = n,
            "splice left bytes for userspace; forwarding them"
        );
        write_all_blocking(to, chunk)?;
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

fn set_linger_zero(sock: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes the tunnel from the maps however `run` ends (including `?` and cancellation),
/// before the sockets close.
struct Unsplice<'a> {
    ebpf: &'a EbpfDataplane,
    keys: TunnelKeys,
}

impl Unsplice<'_> {
    fn finish(self) -> (FlowStats, FlowStats) {
        let stats = self.ebpf.unsplice(self.keys);
        std::mem::forget(self);
        stats
    }
}

impl Drop for Unsplice<'_> {
    fn drop(&mut self) {
        self.ebpf.unsplice(self.keys);
    }
}

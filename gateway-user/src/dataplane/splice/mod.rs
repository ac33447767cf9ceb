//! A tunnel whose bytes the kernel moves: both sockets join the sockmap, and userspace only
//! watches for hang-ups, keeps each direction's kernel backlog within its budget, forwards
//! FIN once the redirected bytes have drained, and tears the tunnel down. See
//! docs/dataplane.md for why each step is ordered as it is.
//!
//! - this module: joining the maps ([`Spliced::start`]), running to the end and leaving them;
//! - [`supervisor`]: the loop that watches one tunnel and steps its two flows;
//! - [`half`]: what userspace knows of one direction;
//! - [`budget`]: how far a flow may run ahead of its destination;
//! - [`witness`]: whether what the kernel moved adds up.

mod budget;
mod half;
mod supervisor;
pub mod witness;

use std::{
    fmt,
    future::Future,
    io,
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_common::FlowStats;
use tokio::sync::Notify;

use self::{
    budget::FlowBudget,
    half::Half,
    supervisor::{Supervisor, MAX_CATCH_UP_BYTES},
    witness::Finding,
};
use super::{
    clock::{idle_since_ns, monotonic_coarse_ns},
    sockopt, EbpfDataplane, TunnelKeys,
};

/// What a splice takes from the tunnel's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpliceSettings {
    /// Most bytes the kernel may hold for one direction.
    pub max_backlog_bytes: u64,
    /// Send buffer forced on spliced sockets; 0 leaves the kernel's autotuning.
    pub sndbuf_bytes: u32,
    /// What all spliced flows together may borrow beyond `max_backlog_bytes` while their
    /// destination keeps up (`spliced_backlog_pool_bytes`).
    pub backlog_pool_bytes: u64,
}

/// How a spliced tunnel ended; `S` is what the caller's `stop` future said (a limit).
#[derive(Debug)]
pub enum SpliceEnd<S> {
    /// Both sides closed their direction, every byte was delivered, and the counts agree.
    Done,
    /// The client side failed (reset, or a write to it failed).
    ClientError(Option<io::Error>),
    /// The backend side failed.
    BackendError(Option<io::Error>),
    /// A syscall of the gateway's own failed.
    Internal(io::Error),
    /// What the kernel moved did not add up: both sides were reset.
    Integrity(Finding),
    /// `stop` resolved first: both peers were sent a FIN.
    Stopped(S),
}

impl<S: fmt::Display> fmt::Display for SpliceEnd<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("closed by both sides"),
            Self::ClientError(Some(e)) => write!(f, "client error: {e}"),
            Self::ClientError(None) => f.write_str("client error"),
            Self::BackendError(Some(e)) => write!(f, "backend error: {e}"),
            Self::BackendError(None) => f.write_str("backend error"),
            Self::Internal(e) => write!(f, "gateway error: {e}"),
            Self::Integrity(what) => write!(f, "splice integrity error: {what}"),
            Self::Stopped(why) => write!(f, "stopped: {why}"),
        }
    }
}

/// What a spliced tunnel moved, for the close log.
#[derive(Debug)]
pub struct SpliceOutcome<S> {
    pub end: SpliceEnd<S>,
    pub client_to_backend: FlowStats,
    pub backend_to_client: FlowStats,
    /// Bytes the verdict passed to userspace (pauses, failed redirects) and userspace
    /// forwarded: client→backend, backend→client.
    pub forwarded_bytes: [u64; 2],
}

/// A tunnel registered in the kernel maps. Dropping it takes the tunnel out of the maps
/// (verdict first) and only then closes the sockets, however the tunnel ended.
pub struct Spliced {
    ebpf: Arc<EbpfDataplane>,
    keys: TunnelKeys,
    halves: [Half; 2],
    /// [`monotonic_coarse_ns`] when the splice began: activity before any segment.
    spliced_at_ns: u64,
    /// Woken by the event dispatcher when the verdict asks for attention.
    notify: Arc<Notify>,
    /// The sockets' `TCP_WINDOW_CLAMP`: a ceiling, lowered only to brake a sender.
    window_clamp: u32,
    // Declared last: fields drop after `Drop::drop` has unspliced.
    client: TcpStream,
    backend: TcpStream,
}

/// The kernel would not splice the tunnel; its sockets are handed back, to be relayed
/// once [`Refused::settle`] says every byte is where the relay expects it.
pub struct Refused {
    pub client: TcpStream,
    pub backend: TcpStream,
    pub error: io::Error,
    /// The verdict ran before the refusal (see [`super::SpliceRefused::verdict_ran`]);
    /// with each socket's counters from before the splice.
    verdict_ran: Option<(Arc<EbpfDataplane>, TunnelKeys, [sockopt::TcpCounters; 2])>,
}

/// How long [`Refused::settle`] waits for bytes the verdict redirected before a refusal to
/// leave the kernel: a psock sends as fast as its destination's window allows, which is
/// microseconds unless that peer has stopped reading.
const REFUSED_DRAIN_LIMIT: Duration = Duration::from_secs(2);

impl Refused {
    /// Whether [`Refused::settle`] has work to do (and blocks) before the relay can take
    /// over: only when the verdict ran before the refusal.
    pub fn needs_settling(&self) -> bool {
        self.verdict_ran.is_some()
    }

    /// Makes the refused tunnel ready for the relay. Blocks (an RCU grace period, then
    /// waiting for the kernel to send what the verdict redirected, see
    /// [`EbpfDataplane::settle_refused`]) when the verdict ran before the refusal;
    /// otherwise returns at once. Returns the bytes the kernel moved before the refusal
    /// (client→backend, backend→client), which the relay must not move again. `Err`:
    /// bytes would be lost (or the kernel did not let them go in time), so the tunnel
    /// cannot be relayed: the caller resets it.
    pub fn settle(&mut self) -> Result<[u64; 2], super::Unsettled> {
        let Some((ebpf, keys, before)) = self.verdict_ran.take() else {
            return Ok([0, 0]);
        };
        ebpf.settle_refused(
            keys,
            &self.client,
            &self.backend,
            before,
            REFUSED_DRAIN_LIMIT,
        )
    }
}

impl Spliced {
    /// Reads the baselines and registers the tunnel: from here on the kernel moves its
    /// bytes, each direction at most its budget ahead of its destination (the settings'
    /// `max_backlog_bytes`, grown from the shared pool while the destination keeps up; see
    /// [`budget`]). The sockets must not have been read from or written to by anyone else
    /// since the handshake, and their receive queues must hold no partly read skb
    /// ([`super::sockio::take_queued`]).
    pub fn start(
        ebpf: Arc<EbpfDataplane>,
        client: TcpStream,
        backend: TcpStream,
        settings: &SpliceSettings,
    ) -> Result<Self, Refused> {
        let budget = settings.max_backlog_bytes;
        // Exact baselines: a byte or an ACK miscounted here would make a FIN go out too
        // early (bytes lost) or never (tunnel hangs).
        let counters = sockopt::tcp_counters_settled(&client)
            .and_then(|c| Ok((c, sockopt::tcp_counters_settled(&backend)?)));
        let (c, b) = match counters {
            Ok(counters) => counters,
            Err(error) => {
                return Err(Refused {
                    client,
                    backend,
                    error,
                    verdict_ran: None,
                })
            }
        };
        let sized = [&client, &backend].into_iter().try_for_each(|sock| {
            sockopt::set_receive_buffer(sock, receive_buffer(budget))?;
            warn_if_receive_buffer_capped(sock, receive_buffer(budget));
            if settings.sndbuf_bytes > 0 {
                // Not fatal: a smaller buffer only slows the redirect worker down.
                if let Err(err) = sockopt::set_send_buffer(sock, settings.sndbuf_bytes) {
                    tracing::debug!(error = %err, "could not set the tunnel's send buffer");
                }
            }
            sockopt::set_window_clamp(sock, window_clamp(budget))
        });
        if let Err(error) = sized {
            return Err(Refused {
                client,
                backend,
                error,
                verdict_ran: None,
            });
        }
        match ebpf.splice(&client, &backend, budget) {
            Ok(keys) => {
                let notify = Arc::new(Notify::new());
                ebpf.watch_flows(keys, &notify);
                let now = Instant::now();
                let flow_budget = || FlowBudget::new(budget, settings.backlog_pool_bytes, now);
                Ok(Self {
                    halves: [
                        Half::new(keys.client, &c, &b, flow_budget()),
                        Half::new(keys.backend, &b, &c, flow_budget()),
                    ],
                    spliced_at_ns: monotonic_coarse_ns(),
                    notify,
                    window_clamp: window_clamp(budget),
                    ebpf,
                    keys,
                    client,
                    backend,
                })
            }
            Err(refused) => Err(Refused {
                verdict_ran: refused.verdict_ran.map(|keys| (ebpf, keys, [c, b])),
                error: io::Error::other(refused),
                client,
                backend,
            }),
        }
    }

    /// The cookies the tunnel's sockets are registered under.
    pub fn keys(&self) -> TunnelKeys {
        self.keys
    }

    pub fn ebpf(&self) -> &Arc<EbpfDataplane> {
        &self.ebpf
    }

    /// How long the tunnel has carried no byte either way, from the timestamps the verdict
    /// keeps per direction (a map lookup); for the caller's idle timer.
    pub fn idle_clock(&self) -> IdleClock {
        IdleClock {
            ebpf: self.ebpf.clone(),
            keys: self.keys,
            spliced_at_ns: self.spliced_at_ns,
        }
    }

    /// Runs the tunnel to its end: both sides closed, a failure (both sockets are then
    /// reset), or `stop` (a limit: both peers then get a FIN).
    pub async fn run<S>(mut self, stop: impl Future<Output = S>) -> SpliceOutcome<S> {
        let tunnel = Supervisor {
            ebpf: &self.ebpf,
            keys: self.keys,
            socks: [&self.client, &self.backend],
            notify: &self.notify,
            window_clamp: self.window_clamp,
        };
        let end = match tunnel.run(&mut self.halves, stop).await {
            // Every byte has been delivered: the counts must now agree exactly.
            Ok(SpliceEnd::Done) => match tunnel.witness(&self.halves, true) {
                Ok(None) => SpliceEnd::Done,
                Ok(Some(wrong)) => SpliceEnd::Integrity(wrong),
                Err(failure) => failure.into_end(),
            },
            Ok(end) => end,
            Err(failure) => failure.into_end(),
        };
        match &end {
            SpliceEnd::Done => {}
            SpliceEnd::Stopped(_) => sockopt::shutdown_both(&self.client, &self.backend),
            SpliceEnd::ClientError(_)
            | SpliceEnd::BackendError(_)
            | SpliceEnd::Internal(_)
            | SpliceEnd::Integrity(_) => sockopt::reset_both(&self.client, &self.backend),
        }
        let (client_to_backend, backend_to_client) = self.ebpf.flow_stats(self.keys);
        SpliceOutcome {
            end,
            client_to_backend,
            backend_to_client,
            forwarded_bytes: [self.halves[0].forwarded, self.halves[1].forwarded],
        }
    }
}

/// See [`Spliced::idle_clock`].
pub struct IdleClock {
    ebpf: Arc<EbpfDataplane>,
    keys: TunnelKeys,
    /// Activity before any segment.
    spliced_at_ns: u64,
}

impl IdleClock {
    /// How long no byte moved either way, at least (see [`idle_since_ns`]).
    pub fn idle_for(&self) -> Duration {
        let (up, down) = self.ebpf.flow_stats(self.keys);
        idle_since_ns(
            up.last_activity_ns
                .max(down.last_activity_ns)
                .max(self.spliced_at_ns),
        )
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        self.ebpf.unsplice(self.keys);
        for half in &mut self.halves {
            half.budget.release(self.ebpf.backlog_pool());
        }
    }
}

/// The receive buffer (`SO_RCVBUF`) of a spliced socket: how much a paused flow holds in
/// its source's queue before TCP stops the sender, so what one pause hands to userspace.
/// A quarter of the budget (the kernel doubles it for its bookkeeping), between
/// [`MIN_RECEIVE_BUFFER_BYTES`] and [`MAX_RECEIVE_BUFFER_BYTES`]. It also bounds the window
/// a spliced socket advertises, and so the throughput of one tunnel over a path with a long
/// round trip (16 MiB doubled covers 1.3 Gbit/s at 100 ms).
fn receive_buffer(budget: u64) -> u32 {
    u32::try_from(budget / 4)
        .unwrap_or(u32::MAX)
        .clamp(MIN_RECEIVE_BUFFER_BYTES, MAX_RECEIVE_BUFFER_BYTES)
}

/// The `TCP_WINDOW_CLAMP` of a spliced socket. A fixed receive buffer stops autotuning,
/// which is also what raises the window clamp; left at its value from the handshake (about
/// two loopback MSS) it would cap the window at 128 KiB. The clamp is a ceiling here, not a
/// brake (but see `Supervisor::brake`).
fn window_clamp(budget: u64) -> u32 {
    2 * receive_buffer(budget)
}

/// Says once per process that spliced sockets got less receive buffer than asked for:
/// without `CAP_NET_ADMIN`, `net.core.rmem_max` caps it, and pauses then stall.
fn warn_if_receive_buffer_capped(sock: &TcpStream, asked: u32) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(granted) = sockopt::receive_buffer(sock) else {
        return;
    };
    // The kernel reports twice what it granted.
    if granted / 2 < asked.min(MIN_RECEIVE_BUFFER_BYTES)
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            asked_bytes = asked,
            granted_bytes = granted / 2,
            "spliced sockets get a smaller receive buffer than the splice needs \
             (net.core.rmem_max caps it without CAP_NET_ADMIN): a fast tunnel will stall \
             about 200 ms at each flow-control pause; raise it with \
             `sysctl -w net.core.rmem_max=8388608`"
        );
    }
}

/// Smaller buffers stall a fast sender. As passed bytes fill the buffer, the advertised
/// window shrinks below one MSS (64 KiB on loopback); a sender does not send into such a
/// window and waits for its persist timer (about 200 ms), and once the buffer has been
/// emptied no window update reached it either (`ss -ti` on the sender: `snd_wnd` 4–14 KiB,
/// `rwnd_limited` over 90 %, `lastsnd` climbing to the RTO). Measured here with one 1 GiB
/// upload through a 4 MiB budget: 2 MiB buffers ran at 0.4 Gbit/s with a stall per pause,
/// 8 MiB ones (this, once the kernel doubles it) at 4.7–6 Gbit/s with none. The value is
/// capped by `net.core.rmem_max` unless the gateway holds CAP_NET_ADMIN
/// (`SO_RCVBUFFORCE`); see docs/dataplane.md.
const MIN_RECEIVE_BUFFER_BYTES: u32 = 4 * 1024 * 1024;
/// What one pause may pass (twice this, once the kernel doubles it) must fit in one
/// catch-up round ([`MAX_CATCH_UP_BYTES`]): otherwise held bytes are taken before the sender
/// has stopped, its window reopens, and the flow never catches up.
const MAX_RECEIVE_BUFFER_BYTES: u32 = (MAX_CATCH_UP_BYTES / 2) as u32;

//! A tunnel whose bytes the kernel moves: both sockets join the sockmap, and userspace only
//! watches for hang-ups, keeps each direction's kernel backlog within its budget, forwards
//! FIN once the redirected bytes have drained, and tears the tunnel down. See
//! docs/dataplane.md for why each step is ordered as it is.

use std::{
    future::Future,
    io,
    net::{Shutdown, TcpStream},
    os::fd::AsFd,
    sync::Arc,
    time::Duration,
};

use gateway_common::{seq_state, FlowControl, FlowStats};
use tokio::sync::Notify;

use super::{
    limits::{monotonic_coarse_ns, since_ns, Limits},
    sockio::{kick, recv_nonblocking, send_nonblocking},
    watch::HangupWatch,
    CloseReason,
};
use crate::dataplane::{
    sockopt::{self, TcpCounters},
    EbpfDataplane, TunnelKeys,
};

/// First and longest pause between two checks while a drain or a catch-up is under way.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);
/// Longest pause between checks of a flow that is paused but fully caught up: it resumes
/// on the sender's next segment, and the check only guards against a missed event.
const POLL_PAUSED_MAX: Duration = Duration::from_secs(1);
/// Most passed bytes peeked at once for one flow. A flow's passed bytes are bounded by its
/// source's receive buffer (`tcp_rmem` max, 6 MiB by default), so this takes them all.
const MAX_CATCH_UP_BYTES: usize = 16 * 1024 * 1024;
/// Bound on one segment as the verdict sees it (a GRO-merged skb on loopback is at most
/// 64 KiB; BIG TCP can go beyond): a paused flow whose limit leaves this much room resumes
/// with its next segment.
const MAX_SEGMENT_BYTES: u64 = 256 * 1024;

/// What a spliced tunnel moved, for the close log.
#[derive(Debug)]
pub struct SpliceOutcome {
    pub reason: CloseReason,
    pub client_to_backend: FlowStats,
    pub backend_to_client: FlowStats,
    /// Bytes the verdict passed to userspace (pauses, failed redirects) and userspace
    /// forwarded: client→backend, backend→client.
    pub forwarded_bytes: [u64; 2],
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

/// One direction of the tunnel: bytes arriving on `from` leave through `to`.
struct Half {
    /// Cookie of `from`: the key of this flow in `FLOWS` and `CONTROL`.
    cookie: u64,
    /// Bytes userspace had consumed from `from` before the splice began.
    consumed_before: u64,
    /// Bytes written into `to` before the splice began.
    written_before: u64,
    /// Bytes userspace wrote into `to` since (passed bytes it forwarded).
    forwarded: u64,
    /// What this flow's `CONTROL` entry should hold (only we write it); `limit` may be
    /// raised here before it is published.
    control: FlowControl,
    /// What this flow's `CONTROL` entry holds now.
    published: FlowControl,
    /// Scratch space for forwarding passed bytes; emptied once the flow is caught up.
    buf: Vec<u8>,
    /// `from`'s window is clamped nearly shut (see `clamp`).
    window_shut: bool,
    /// The backlog went past half the budget: the sender is held back (see `flow_step`).
    throttled: bool,
    /// The flow may need us: paused, passed bytes to forward, or a watermark crossed.
    attention: bool,
    /// Passed bytes wait in `from`'s queue to be forwarded.
    outstanding: bool,
    /// The last attempt to forward passed bytes found none readable yet: they wait in
    /// `from`'s psock queue behind bytes redirected *to* `from` (see `flow_step`).
    stuck: bool,
    /// `from` has sent FIN.
    eof: bool,
    /// `to` has been shut down for writing (FIN forwarded).
    shut: bool,
}

impl Half {
    fn new(cookie: u64, from: &TcpCounters, to: &TcpCounters, budget: u64) -> Self {
        Self {
            cookie,
            consumed_before: from.bytes_consumed(),
            written_before: to.bytes_written(),
            forwarded: 0,
            control: FlowControl::new(budget),
            published: FlowControl::new(budget),
            buf: Vec::new(),
            window_shut: false,
            throttled: false,
            attention: true,
            outstanding: false,
            stuck: false,
            eof: false,
            shut: false,
        }
    }

    /// Redirected bytes that have left the kernel's redirect queue for `to`'s send queue.
    fn delivered(&self, to: &TcpCounters) -> u64 {
        to.bytes_written()
            .saturating_sub(self.written_before + self.forwarded)
    }

    /// Whether every byte `from` received before its FIN is now in `to`'s send queue.
    /// After the FIN, `bytes_received` counts one extra for it.
    fn drained(&self, from: &TcpCounters, to: &TcpCounters) -> bool {
        let expected = from.bytes_received.saturating_sub(1 + self.consumed_before);
        to.bytes_written().saturating_sub(self.written_before) >= expected
    }
}

/// A tunnel registered in the kernel maps. Dropping it takes the tunnel out of the maps
/// (verdict first) and only then closes the sockets, however the tunnel ended.
pub struct Spliced {
    ebpf: Arc<EbpfDataplane>,
    keys: TunnelKeys,
    halves: [Half; 2],
    budget: u64,
    /// [`monotonic_coarse_ns`] when the splice began: activity before any segment.
    spliced_at_ns: u64,
    /// Woken by the event dispatcher when the verdict asks for attention.
    notify: Arc<Notify>,
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
    /// bytes, each direction at most `budget` bytes ahead of its destination. The sockets
    /// must not have been read from or written to by anyone else since the handshake, and
    /// their receive queues must hold no partly read skb ([`take_queued`]).
    pub fn start(
        ebpf: Arc<EbpfDataplane>,
        client: TcpStream,
        backend: TcpStream,
        budget: u64,
    ) -> Result<Self, Refused> {
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
                    can_relay: true,
                })
            }
        };
        let clamped = sockopt::set_window_clamp(&client, open_window(budget))
            .and_then(|()| sockopt::set_window_clamp(&backend, open_window(budget)));
        if let Err(error) = clamped {
            return Err(Refused {
                client,
                backend,
                error,
                can_relay: true,
            });
        }
        match ebpf.splice(&client, &backend, budget) {
            Ok(keys) => {
                let notify = Arc::new(Notify::new());
                ebpf.watch_flows(keys, &notify);
                Ok(Self {
                    halves: [
                        Half::new(keys.client, &c, &b, budget),
                        Half::new(keys.backend, &b, &c, budget),
                    ],
                    budget,
                    spliced_at_ns: monotonic_coarse_ns(),
                    notify,
                    ebpf,
                    keys,
                    client,
                    backend,
                })
            }
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
    pub fn keys(&self) -> TunnelKeys {
        self.keys
    }

    pub fn ebpf(&self) -> &Arc<EbpfDataplane> {
        &self.ebpf
    }

    pub async fn run(mut self, limits: &mut Limits) -> SpliceOutcome {
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
        let tunnel = Supervisor {
            ebpf,
            keys,
            socks: [&self.client, &self.backend],
            budget: self.budget,
            notify: &self.notify,
        };
        let reason = match tunnel.run(&mut self.halves, limit).await {
            // Every byte has been delivered: the counts must now agree exactly.
            Ok(CloseReason::Done) => match tunnel.witness(&self.halves, true) {
                Ok(None) => CloseReason::Done,
                Ok(Some(wrong)) => CloseReason::SpliceIntegrity(wrong),
                Err(failure) => failure.reason(),
            },
            Ok(reason) => reason,
            Err(failure) => failure.reason(),
        };
        super::close_both(&reason, &self.client, &self.backend);
        let (client_to_backend, backend_to_client) = self.ebpf.flow_stats(self.keys);
        SpliceOutcome {
            reason,
            client_to_backend,
            backend_to_client,
            forwarded_bytes: [self.halves[0].forwarded, self.halves[1].forwarded],
        }
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        self.ebpf.unsplice(self.keys);
    }
}

/// What the supervision loop works with.
struct Supervisor<'a> {
    ebpf: &'a EbpfDataplane,
    keys: TunnelKeys,
    socks: [&'a TcpStream; 2],
    budget: u64,
    notify: &'a Notify,
}

impl Supervisor<'_> {
    /// Waits for hang-ups, events and limits; keeps each flow within budget and forwards
    /// each FIN once its bytes have drained, until both directions are closed (`Done`), a
    /// side fails, or `limit` is reached.
    async fn run(
        &self,
        halves: &mut [Half; 2],
        limit: impl Future<Output = CloseReason>,
    ) -> Result<CloseReason, Failure> {
        tokio::pin!(limit);
        let socks = self.socks;
        // Segments that arrived before a socket joined the map sit in its receive queue
        // until the next `data_ready`. A receive makes the kernel run the verdict on them
        // now (tcp_bpf_recvmsg_parser); MSG_PEEK so that nothing is taken even if the
        // verdict passed it to userspace (the flow step forwards it in order).
        for (side, sock) in socks.iter().enumerate() {
            kick(sock).map_err(on(side))?;
        }

        let watch = HangupWatch::new(socks[0].as_fd(), socks[1].as_fd())
            .map_err(|error| Failure { side: None, error })?;
        let mut pause = POLL_MIN;
        loop {
            let stats = self.ebpf.flow_stats(self.keys);
            let mut progressed = false;
            let mut stepped = false;
            for (from, half) in halves.iter_mut().enumerate() {
                let to = 1 - from;
                let flow = if from == 0 { &stats.0 } else { &stats.1 };
                if half.attention || half.eof {
                    progressed |= self.flow_step(half, flow, from, &watch)?;
                    stepped = true;
                }
                if half.eof && !half.shut {
                    let from_counters = sockopt::tcp_counters(socks[from]).map_err(on(from))?;
                    let to_counters = sockopt::tcp_counters(socks[to]).map_err(on(to))?;
                    if half.drained(&from_counters, &to_counters) {
                        tracing::debug!(from, "drained; forwarding FIN");
                        socks[to].shutdown(Shutdown::Write).map_err(on(to))?;
                        half.shut = true;
                    }
                }
            }
            if halves.iter().all(|h| h.shut) {
                return Ok(CloseReason::Done);
            }
            // At every pause, resume and watermark: does what the kernel moved add up?
            if stepped {
                if let Some(wrong) = self.witness(halves, false)? {
                    return Ok(CloseReason::SpliceIntegrity(wrong));
                }
            }
            if progressed {
                pause = POLL_MIN;
            }

            // Poll quickly while bytes wait to move, slowly while a flow is merely paused.
            let busy = halves.iter().any(|h| (h.eof && !h.shut) || h.outstanding);
            let paused = halves.iter().any(|h| h.attention);
            let poll = if busy { POLL_MAX } else { POLL_PAUSED_MAX };
            let events = tokio::select! {
                reason = &mut limit => return Ok(reason),
                () = self.notify.notified() => {
                    for half in halves.iter_mut() {
                        half.attention = true;
                    }
                    pause = POLL_MIN;
                    continue;
                }
                events = watch.next() => events.map_err(|error| Failure { side: None, error })?,
                () = tokio::time::sleep(pause), if busy || paused => {
                    pause = (pause * 2).min(poll);
                    continue;
                }
            };
            pause = POLL_MIN;
            tracing::debug!(?events, "socket events");
            if let Some(side) = events.iter().position(|e| e.error) {
                let err = sockopt::take_socket_error(socks[side]).map_err(on(side))?;
                return Ok(if side == 0 {
                    CloseReason::ClientError(err)
                } else {
                    CloseReason::BackendError(err)
                });
            }
            for (from, half) in halves.iter_mut().enumerate() {
                let (source, destination) = (events[from], events[1 - from]);
                half.eof |= source.read_hangup || source.hangup;
                half.attention |= destination.writable;
            }
        }
    }

    /// The integrity witness: checks, for each direction, that the kernel moved no byte the
    /// source socket did not receive and delivered no byte it did not move, and that the
    /// verdict found every segment in sequence. Returns what does not add up, if anything.
    ///
    /// Bytes moved (redirected plus passed, counted by the verdict) can never exceed bytes
    /// received since the splice (`tcpi_bytes_received`, which counts each sequence number
    /// once); bytes in the destination's send queue since the splice can never exceed
    /// bytes redirected plus bytes userspace forwarded. The readings are ordered so that
    /// neither check can fire on a byte in transit: destinations first (a byte the
    /// redirect worker pushed was counted by the verdict before), then `FLOWS`, then
    /// sources (a byte the verdict counted was received before). With `at_end` (both FINs
    /// forwarded, every byte delivered) the three counts must be equal.
    fn witness(&self, halves: &[Half; 2], at_end: bool) -> Result<Option<String>, Failure> {
        let socks = self.socks;
        let destinations = [
            sockopt::tcp_counters(socks[1]).map_err(on(1))?,
            sockopt::tcp_counters(socks[0]).map_err(on(0))?,
        ];
        let (up, down) = self.ebpf.flow_stats(self.keys);
        let sources = [
            sockopt::tcp_counters(socks[0]).map_err(on(0))?,
            sockopt::tcp_counters(socks[1]).map_err(on(1))?,
        ];
        for (from, half) in halves.iter().enumerate() {
            let name = ["client→backend", "backend→client"][from];
            let flow = if from == 0 { &up } else { &down };
            if flow.seq_state & seq_state::ANOMALY != 0 {
                return Ok(Some(format!(
                    "{name}: the verdict met a segment out of sequence (after {} bytes)",
                    flow.bytes + flow.passed_bytes
                )));
            }
            // Both counts below include one for a FIN once it arrived or was acknowledged.
            let received = sources[from]
                .bytes_received
                .saturating_sub(half.consumed_before);
            let moved = flow.bytes + flow.passed_bytes;
            if moved > received {
                return Ok(Some(format!(
                    "{name}: the kernel moved {moved} bytes ({} redirected, {} passed) but the \
                     source received {received} since the splice",
                    flow.bytes, flow.passed_bytes
                )));
            }
            let delivered = destinations[from]
                .bytes_written()
                .saturating_sub(half.written_before);
            let sent = flow.bytes + half.forwarded;
            if delivered > sent + u64::from(half.shut) {
                return Ok(Some(format!(
                    "{name}: the destination was given {delivered} bytes but only {sent} were \
                     moved ({} redirected, {} forwarded by the gateway)",
                    flow.bytes, half.forwarded
                )));
            }
            if at_end {
                let expected = received.saturating_sub(1);
                if moved != expected || !(sent..=sent + 1).contains(&delivered) || sent != expected
                {
                    return Ok(Some(format!(
                        "{name}: at the end the source received {expected} bytes, the kernel \
                         moved {moved}, {sent} were sent on and the destination was given \
                         {delivered}"
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Looks after one flow. Two brakes keep its kernel backlog (bytes redirected but not
    /// yet in the destination's send queue) within budget:
    /// - *throttle*: past half the budget, the source's advertised TCP window is clamped
    ///   shut, so the sender slows to the destination's pace while every byte stays in the
    ///   kernel; below a quarter it reopens;
    /// - *pause* (the verdict's hard cap at the full budget): segments are passed to the
    ///   source's own queue, and are forwarded here once everything redirected before them
    ///   has reached the destination.
    ///
    /// Returns whether any byte moved.
    fn flow_step(
        &self,
        half: &mut Half,
        flow: &FlowStats,
        from: usize,
        watch: &HangupWatch<'_>,
    ) -> Result<bool, Failure> {
        let to = 1 - from;
        let mut delivered = half.delivered(&sockopt::tcp_counters(self.socks[to]).map_err(on(to))?);
        let mut moved = false;
        half.stuck = false;
        if delivered >= flow.bytes {
            // Everything redirected so far is in `to`: there is room for a full budget
            // again, and passed bytes may follow now.
            half.control.limit = half.control.limit.max(flow.bytes + self.budget);
            if flow.passed_bytes > half.control.released {
                moved = self.forward(half, flow, from)?;
                delivered = half.delivered(&sockopt::tcp_counters(self.socks[to]).map_err(on(to))?);
            }
        }
        let backlog = flow.bytes.saturating_sub(delivered);
        tracing::trace!(
            from,
            delivered,
            backlog,
            bytes = flow.bytes,
            passed = flow.passed_bytes,
            released = half.control.released,
            paused = flow.paused,
            throttled = half.throttled,
            "flow step"
        );
        if backlog >= self.budget / 2 {
            half.throttled = true;
        } else if backlog <= self.budget / 4 {
            half.throttled = false;
        }
        // While throttled no watermark is needed: the destination's room (EPOLLOUT) wakes
        // us instead. Otherwise, announce the backlog reaching half the budget.
        let notify_at = if half.throttled {
            u64::MAX
        } else {
            delivered + self.budget / 2
        };
        let control = FlowControl {
            limit: half.control.limit.max(delivered + self.budget),
            notify_at,
            released: half.control.released,
        };
        self.publish(half, control)?;

        let after = self.ebpf.flow_stats(self.keys);
        let flow = if from == 0 { after.0 } else { after.1 };
        half.outstanding = flow.passed_bytes > half.control.released;
        half.attention = flow.paused != 0 || half.outstanding || half.throttled;
        if !half.outstanding && !half.buf.is_empty() {
            half.buf = Vec::new();
        }
        // While paused the window stays shut: the sender goes quiet, so forwarding the
        // passed bytes catches up and the flow can resume; and memory stays bounded by the
        // budget plus what was in flight. Once caught up (every passed byte released, the
        // backlog within the limit) it must reopen: the verdict only clears `paused` when
        // the next segment arrives, and behind a shut window that would be a zero-window
        // probe, hundreds of milliseconds later.
        //
        // Except while the passed bytes are stuck. The kernel queues a passed segment in
        // `from`'s psock (`ingress_skb`) whenever that queue is not empty, and the same
        // queue holds the segments the other flow redirects *to* `from`, which wait there
        // for room in `from`'s send buffer, i.e. for `from`'s peer to read. A peer that
        // stops reading while it cannot write (an echo server, request/response) would
        // then wait on our shut window, and we on it: the tunnel stalls for good. So while
        // nothing passed is readable yet, the window stays open: the peer can finish its
        // write and read again, which moves the queue. What it sends meanwhile is still
        // bounded, by `from`'s receive buffer (passed segments stay charged to it); a cap
        // of one budget here was measured to still stall an echo peer under load.
        let caught_up = !half.outstanding && flow.bytes + MAX_SEGMENT_BYTES <= control.limit;
        let stuck = half.stuck;
        let clamp =
            half.throttled || (!stuck && (half.outstanding || (flow.paused != 0 && !caught_up)));
        self.clamp(half, from, clamp)?;
        watch
            .want_writable(to, half.throttled || half.outstanding)
            .map_err(|error| Failure { side: None, error })?;
        Ok(moved)
    }

    /// Makes `control` this flow's `CONTROL` entry, unless it already is.
    fn publish(&self, half: &mut Half, control: FlowControl) -> Result<(), Failure> {
        half.control = control;
        if control != half.published {
            self.ebpf
                .set_control(half.cookie, control)
                .map_err(|e| Failure {
                    side: None,
                    error: io::Error::other(e),
                })?;
            half.published = control;
        }
        Ok(())
    }

    /// Forwards passed bytes from `from` to `to`. A round peeks *every* outstanding passed
    /// byte, writes what `to` takes, publishes it as released, and only then takes it off
    /// `from`. Taking bytes reopens the sender's TCP window; if that happened chunk by
    /// chunk, the sender would refill the queue as fast as it drained and `released` would
    /// never catch up with `passed` for the flow to resume. Returns whether any byte moved.
    fn forward(&self, half: &mut Half, flow: &FlowStats, from: usize) -> Result<bool, Failure> {
        let to = 1 - from;
        let outstanding = flow.passed_bytes - half.control.released;
        let want = usize::try_from(outstanding)
            .unwrap_or(usize::MAX)
            .min(MAX_CATCH_UP_BYTES);
        half.buf.resize(want, 0);
        let peeked = match recv_nonblocking(self.socks[from], &mut half.buf, libc::MSG_PEEK)
            .map_err(on(from))?
        {
            Some(0) | None => {
                half.stuck = true;
                return Ok(false);
            }
            Some(n) => n,
        };
        let Some(sent) = send_nonblocking(self.socks[to], &half.buf[..peeked]).map_err(on(to))?
        else {
            return Ok(false);
        };
        half.forwarded += sent as u64;
        let control = FlowControl {
            released: half.control.released + sent as u64,
            ..half.control
        };
        self.publish(half, control)?;
        let taken =
            recv_nonblocking(self.socks[from], &mut half.buf[..sent], 0).map_err(on(from))?;
        if taken != Some(sent) {
            return Err(Failure {
                side: None,
                error: io::Error::other(format!(
                    "took {taken:?} of {sent} peeked bytes off the source"
                )),
            });
        }
        tracing::trace!(bytes = sent, from, "forwarded passed bytes");
        Ok(sent > 0)
    }

    /// Clamps `from`'s advertised receive window nearly shut (`TCP_WINDOW_CLAMP`), or back
    /// to half the budget (see [`open_window`]). Redirected bytes never count against the
    /// receive buffer, so without this the sender would never be slowed down.
    fn clamp(&self, half: &mut Half, from: usize, shut: bool) -> Result<(), Failure> {
        if half.window_shut != shut {
            let clamp = if shut { 1 } else { open_window(self.budget) };
            sockopt::set_window_clamp(self.socks[from], clamp).map_err(on(from))?;
            half.window_shut = shut;
        }
        Ok(())
    }
}

/// The receive window a spliced socket may advertise: half the budget. A clamp cannot
/// take back a window already advertised, so this bounds what a sender can still put in
/// flight after the throttle shuts the window; backlog plus in flight then stay within the
/// budget. (Without it autotuning grows the window to several MiB.)
fn open_window(budget: u64) -> u32 {
    u32::try_from(budget / 2).unwrap_or(u32::MAX).max(64 * 1024)
}

//! An upgraded WebSocket connection: the handoff from HTTP to a tunnel, and the tunnel's
//! life on the chosen dataplane until both sides have closed.

mod buffers;
mod limits;
pub mod registry;
mod relay;

use std::{
    fmt, io,
    os::fd::AsRawFd,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use self::registry::{Peers, Registry};
use crate::{
    config::OnBackendDown,
    dataplane::{
        clock::idle_since_ns,
        sockio, sockopt,
        splice::{self, witness::Finding, SpliceEnd, SpliceSettings},
        Dataplane, EbpfDataplane,
    },
    health::Lease,
    metrics::{Direction, Metrics, Mode},
    tls::{BackendStream, ClientStream, MaybeTls},
};

/// Both connections of an upgraded connection (plain TCP or TLS), plus bytes each side sent
/// along with the handshake that the HTTP layer had already read (plaintext either way;
/// they must be delivered first).
pub struct Upgraded {
    pub client: ClientStream,
    /// Read from the client after its request head; owed to the backend.
    pub client_early: Bytes,
    pub backend: BackendStream,
    /// Read from the backend after its 101 head; owed to the client.
    pub backend_early: Bytes,
}

/// Limits every tunnel runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// No byte either way for this long closes the tunnel.
    pub idle_timeout: std::time::Duration,
    /// The tunnel closes this long after it opened, busy or not.
    pub max_lifetime: Option<std::time::Duration>,
    /// How a spliced tunnel's flows are held back.
    pub splice: SpliceSettings,
    /// When a plaintext tunnel on the eBPF dataplane leaves the relay for the splice.
    pub promote: crate::config::Promotion,
}

/// What a tunnel needs from the gateway around it.
pub struct Context {
    pub dataplane: Dataplane,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Cancelled at the end of the shutdown drain period: the tunnel closes at once.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Counts the tunnel on its backend (least-connections, `/backends`) while it lives,
    /// and tells it when the backend goes down; held by its registration.
    pub lease: Lease,
    /// What to do with the tunnel when its backend goes down or leaves the configuration.
    pub on_backend_down: OnBackendDown,
    /// Where live tunnels are listed (`/tunnels`).
    pub registry: Arc<Registry>,
    pub peers: Peers,
}

/// Why a tunnel ended.
#[derive(Debug)]
pub enum CloseReason {
    /// Both sides closed their direction and every byte was delivered.
    Done,
    /// The client side failed (reset, or a write to it failed).
    ClientError(Option<io::Error>),
    /// The backend side failed.
    BackendError(Option<io::Error>),
    /// A syscall of the gateway's own failed (e.g. registering the sockets with the hang-up watch).
    Internal(io::Error),
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// Open for the maximum lifetime.
    MaxLifetime,
    /// Still open at the end of the shutdown drain period.
    Shutdown,
    /// Its backend failed its probes (or left the configuration, `removed`), and the
    /// backend settings' `on_backend_down` says close (at once, or after draining).
    BackendDown { removed: bool },
    /// The bytes the kernel moved for a spliced tunnel did not add up: the stream can no
    /// longer be vouched for, so both sides are reset.
    SpliceIntegrity(Finding),
}

impl CloseReason {
    /// The `reason` label of `gateway_tunnels_closed_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::ClientError(_) => "client_error",
            Self::BackendError(_) => "backend_error",
            Self::Internal(_) => "internal",
            Self::IdleTimeout => "idle_timeout",
            Self::MaxLifetime => "max_lifetime",
            Self::Shutdown => "shutdown",
            Self::BackendDown { .. } => "backend_down",
            Self::SpliceIntegrity(_) => "integrity_error",
        }
    }

    /// How the sockets are closed: `Reset` passes a failure on to the other side,
    /// `Graceful` sends both peers a FIN (timeouts, shutdown), `AsIs` leaves the already
    /// forwarded FINs.
    fn closing(&self) -> Closing {
        match self {
            Self::Done => Closing::AsIs,
            Self::IdleTimeout | Self::MaxLifetime | Self::Shutdown | Self::BackendDown { .. } => {
                Closing::Graceful
            }
            Self::ClientError(_)
            | Self::BackendError(_)
            | Self::Internal(_)
            | Self::SpliceIntegrity(_) => Closing::Reset,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    AsIs,
    Graceful,
    Reset,
}

/// Closes both sockets the way `reason` calls for (see [`CloseReason::closing`]); the
/// caller drops them afterwards.
fn close_both(reason: &CloseReason, client: &impl AsRawFd, backend: &impl AsRawFd) {
    match reason.closing() {
        Closing::AsIs => {}
        Closing::Reset => sockopt::reset_both(client, backend),
        Closing::Graceful => sockopt::shutdown_both(client, backend),
    }
}

impl From<SpliceEnd<CloseReason>> for CloseReason {
    /// A spliced tunnel's end; `Stopped` carries the limit that stopped it.
    fn from(end: SpliceEnd<CloseReason>) -> Self {
        match end {
            SpliceEnd::Done => Self::Done,
            SpliceEnd::ClientError(err) => Self::ClientError(err),
            SpliceEnd::BackendError(err) => Self::BackendError(err),
            SpliceEnd::Internal(err) => Self::Internal(err),
            SpliceEnd::Integrity(finding) => Self::SpliceIntegrity(finding),
            SpliceEnd::Stopped(limit) => limit,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("closed by both sides"),
            Self::ClientError(Some(e)) => write!(f, "client error: {e}"),
            Self::ClientError(None) => f.write_str("client error"),
            Self::BackendError(Some(e)) => write!(f, "backend error: {e}"),
            Self::BackendError(None) => f.write_str("backend error"),
            Self::Internal(e) => write!(f, "gateway error: {e}"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::MaxLifetime => f.write_str("maximum lifetime reached"),
            Self::Shutdown => f.write_str("gateway shutting down"),
            Self::BackendDown { removed: false } => f.write_str("backend down"),
            Self::BackendDown { removed: true } => {
                f.write_str("backend removed from the configuration")
            }
            Self::SpliceIntegrity(what) => write!(f, "splice integrity error: {what}"),
        }
    }
}

/// The wait before a promotion is tried again after a receive queue did not run empty; it
/// doubles with each try, up to 32 times this.
const PROMOTION_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// Most bytes read from one socket at handoff while waiting for its receive queue to run
/// empty (see [`sockio::take_queued`]); a tunnel past it is relayed instead of spliced.
const HANDOFF_READ_LIMIT_BYTES: usize = 256 * 1024;

/// The same at a promotion: twice what the socket's receive buffer holds, at least
/// [`HANDOFF_READ_LIMIT_BYTES`]. A busy stream's receive queue fills while the relay is
/// stopped (megabytes, with autotuning), and the reads must take it all and come back
/// short once; with the upgrade's 256 KiB a stream moving a gigabyte at 9 Gbit/s was never
/// promoted (each try found its queue still full), and went all the way on the relay.
fn promotion_read_limit(sock: &TcpStream) -> usize {
    let granted = sockopt::receive_buffer(sock).map_or(0, |bytes| bytes as usize);
    (2 * granted).max(HANDOFF_READ_LIMIT_BYTES)
}

/// The receive window a socket may advertise while a promotion empties its queue, if the
/// first [`HANDOFF_READ_LIMIT_BYTES`] did not: less than one of [`sockio::take_queued`]'s
/// reads, so that once the sender has used the window it had, a read comes back short.
/// Without it a sender as fast as those reads (the test client on loopback) refilled the
/// queue as it emptied, past any limit. Only then: lowering the clamp also lowers the
/// socket's `rcv_ssthresh`, which raising it again does not restore (`tcp_set_window_clamp`),
/// so the window grows back slowly; clamped at every promotion, 1 000 tunnels promoted
/// while idle then exchanged 256 KiB each way at 7.8 Gbit/s instead of 23.
const PROMOTION_WINDOW_CLAMP: u32 = 16 * 1024;

/// Empties both receive queues for a promotion (see [`sockio::take_queued`]): first as at
/// an upgrade, then, for a queue that did not run empty, with the socket's window clamped
/// ([`PROMOTION_WINDOW_CLAMP`]) and up to [`promotion_read_limit`]. `Ok(false)`: a queue
/// still did not run empty, and the tunnel goes on on the relay: every clamp is then as it
/// was. On success a lowered clamp stays down: the splice sets its own.
fn empty_queues(
    client: &TcpStream,
    backend: &TcpStream,
    from_client: &mut Vec<u8>,
    from_backend: &mut Vec<u8>,
) -> Result<bool, CloseReason> {
    let client_error = |e| CloseReason::ClientError(Some(e));
    let backend_error = |e| CloseReason::BackendError(Some(e));
    let (client_emptied, client_clamp) = empty_queue(client, from_client).map_err(client_error)?;
    let (backend_emptied, backend_clamp) = if client_emptied {
        empty_queue(backend, from_backend).map_err(backend_error)?
    } else {
        (false, None)
    };
    let emptied = client_emptied && backend_emptied;
    if !emptied {
        if let Some(clamp) = client_clamp {
            sockopt::set_window_clamp(client, clamp).map_err(client_error)?;
        }
        if let Some(clamp) = backend_clamp {
            sockopt::set_window_clamp(backend, clamp).map_err(backend_error)?;
        }
    }
    Ok(emptied)
}

/// One socket's part of [`empty_queues`]: whether its queue ran empty, and the clamp it
/// had if it was lowered.
fn empty_queue(sock: &TcpStream, into: &mut Vec<u8>) -> io::Result<(bool, Option<u32>)> {
    if sockio::take_queued(sock, into, HANDOFF_READ_LIMIT_BYTES)? {
        return Ok((true, None));
    }
    let clamp = sockopt::window_clamp(sock)?;
    sockopt::set_window_clamp(sock, PROMOTION_WINDOW_CLAMP)?;
    let limit = promotion_read_limit(sock).saturating_sub(into.len());
    Ok((sockio::take_queued(sock, into, limit)?, Some(clamp)))
}

/// Runs a tunnel to its end and logs one line when it closes. Two plaintext connections
/// are spliced when the eBPF dataplane is loaded; a tunnel with TLS on either side is
/// relayed in userspace whatever the dataplane (the kernel here has no kTLS, and splicing
/// would move ciphertext between two different TLS sessions).
pub async fn run(up: Upgraded, ctx: Context) {
    let started = Instant::now();
    let registered = ctx.registry.open(ctx.peers, ctx.lease);
    let entry = registered.entry.clone();
    let backend = limits::BackendWatch {
        state: registered.backend().subscribe(),
        on_down: ctx.on_backend_down,
        draining: entry.draining.clone(),
        drain_ends: None,
    };
    let settings = ctx.settings;
    let metrics = ctx.metrics;
    let mut limits = limits::Limits::new(settings, started, ctx.shutdown, Some(backend));
    let Upgraded {
        client,
        client_early,
        backend,
        backend_early,
    } = up;
    let early = Early {
        client: client_early.to_vec(),
        backend: backend_early.to_vec(),
    };
    let opened = match (client, backend) {
        (MaybeTls::Plain(client), MaybeTls::Plain(backend)) => {
            open_plain(
                client,
                backend,
                early,
                ctx.dataplane.ebpf().cloned(),
                &settings,
            )
            .await
        }
        (client, backend) => open_tls(client, backend, early).await,
    };
    // Bytes the kernel moved before refusing the splice (client→backend, backend→client).
    let Some((carrier, early, mut kernel_moved)) = opened else {
        return;
    };
    metrics.handoff_bytes(Direction::ClientToBackend, early.client.len() as u64);
    metrics.handoff_bytes(Direction::BackendToClient, early.backend.len() as u64);
    let opened_mode = carrier.mode();
    tracing::Span::current().record("mode", tracing::field::display(opened_mode));
    metrics.tunnel_opened(opened_mode);
    tracing::debug!(
        relay_reason = carrier.relay_reason().map(RelayReason::as_str),
        "tunnel open"
    );

    let relay_counters = || {
        [
            metrics.relayed_bytes(Direction::ClientToBackend),
            metrics.relayed_bytes(Direction::BackendToClient),
        ]
    };
    let early_bytes = [early.client.len() as u64, early.backend.len() as u64];
    let meter = Arc::new(registry::RelayMeter::default());
    match &carrier {
        Carrier::Spliced(spliced) => {
            entry.spliced(early_bytes, spliced.ebpf().clone(), spliced.keys());
        }
        Carrier::Relay(..) | Carrier::Lazy(..) | Carrier::Tls(..) => {
            entry.relayed(early_bytes, meter.clone());
        }
    }
    let mut relay_reason = carrier.relay_reason();
    let mut carrier = carrier;
    // Bytes moved in userspace before the splice (relayed, or taken at a promotion), on
    // top of the handshake's: client→backend, backend→client.
    let mut before_splice = [0u64; 2];
    let mut promoted = None;
    // Promotions tried again after a receive queue did not run empty.
    let mut retries = 0u32;
    // Bytes taken from the queues at a promotion that did not happen: counted as relayed
    // (the meter goes on from there).
    let count_relayed = |taken: [u64; 2]| {
        for ((counted, counter), taken) in meter.bytes.iter().zip(relay_counters()).zip(taken) {
            counted.fetch_add(taken, Ordering::Relaxed);
            counter.inc_by(taken);
        }
    };
    let (reason, moved) = loop {
        match carrier {
            Carrier::Spliced(spliced) => {
                let idle = spliced.idle_clock();
                let out = spliced.run(limits.reached(|| idle.idle_for())).await;
                let [up, down] = out.forwarded_bytes;
                if up + down > 0 {
                    tracing::debug!(up, down, "bytes forwarded by userspace while paused");
                }
                let moved = [
                    before_splice[0] + out.client_to_backend.bytes + up,
                    before_splice[1] + out.backend_to_client.bytes + down,
                ];
                break (CloseReason::from(out.end), moved);
            }
            Carrier::Lazy(client, backend, ebpf, when) => {
                let end = relay::run(
                    client,
                    backend,
                    relay_counters(),
                    &meter,
                    &mut limits,
                    Some(when),
                )
                .await;
                let (client, backend) = match end {
                    relay::RelayEnd::Closed(out) => break closed(out),
                    relay::RelayEnd::Promote(client, backend) => (client, backend),
                };
                let relayed = [0, 1].map(|i| meter.bytes[i].load(Ordering::Relaxed));
                match promote(client, backend, ebpf, &settings, &mut limits, &meter).await {
                    Promoted::Spliced(spliced, taken) => {
                        before_splice = [relayed[0] + taken[0], relayed[1] + taken[1]];
                        let spliced_early = [0, 1].map(|i| early_bytes[i] + before_splice[i]);
                        entry.spliced(spliced_early, spliced.ebpf().clone(), spliced.keys());
                        metrics.handoff_bytes(Direction::ClientToBackend, taken[0]);
                        metrics.handoff_bytes(Direction::BackendToClient, taken[1]);
                        metrics.tunnel_promoted();
                        let after_ms = started.elapsed().as_millis() as u64;
                        tracing::Span::current()
                            .record("mode", tracing::field::display(Mode::Spliced));
                        tracing::debug!(
                            after_ms,
                            client_to_backend_bytes = before_splice[0],
                            backend_to_client_bytes = before_splice[1],
                            "tunnel promoted to the splice"
                        );
                        promoted = Some(after_ms);
                        relay_reason = None;
                        carrier = Carrier::Spliced(spliced);
                    }
                    Promoted::Relayed(client, backend, reason, taken, moved) => {
                        count_relayed(taken);
                        for (total, moved) in kernel_moved.iter_mut().zip(moved) {
                            *total += moved;
                        }
                        relay_reason = Some(reason);
                        carrier = Carrier::Relay(client, backend, reason);
                    }
                    Promoted::Retry(client, backend, ebpf, taken) => {
                        count_relayed(taken);
                        retries += 1;
                        let wait = PROMOTION_RETRY_FIRST * 2u32.saturating_pow(retries.min(5));
                        relay_reason = Some(RelayReason::HandoffBacklog);
                        let when = relay::PromoteWhen {
                            after_bytes: u64::MAX,
                            at: tokio::time::Instant::now() + wait,
                        };
                        carrier = Carrier::Lazy(client, backend, ebpf, when);
                    }
                    Promoted::Closed(reason) => {
                        let moved = [0, 1].map(|i| meter.bytes[i].load(Ordering::Relaxed));
                        break (reason, moved);
                    }
                }
            }
            Carrier::Relay(client, backend, _) => {
                let end = relay::run_to_end(client, backend, relay_counters(), &meter, &mut limits);
                break closed(end.await);
            }
            Carrier::Tls(client, backend) => {
                let end = relay::run_to_end(client, backend, relay_counters(), &meter, &mut limits);
                break closed(end.await);
            }
        }
    };
    let mode = if promoted.is_some() {
        Mode::Spliced
    } else {
        opened_mode
    };
    metrics.tunnel_closed(mode, reason.label());
    if let CloseReason::SpliceIntegrity(what) = &reason {
        metrics.splice_integrity_error();
        tracing::error!(error = %what, "spliced tunnel reset: its bytes did not add up");
    }
    drop(registered);
    let peers = &entry.peers;
    tracing::info!(
        tunnel = entry.id,
        client = %peers.client,
        backend = %peers.backend,
        pool = %peers.pool,
        mode = %mode,
        client_to_backend_bytes = moved[0] + early_bytes[0] + kernel_moved[0],
        backend_to_client_bytes = moved[1] + early_bytes[1] + kernel_moved[1],
        duration_ms = started.elapsed().as_millis() as u64,
        reason = %reason,
        close_reason = reason.label(),
        relay_reason = relay_reason.map(RelayReason::as_str),
        promoted_after_ms = promoted,
        "tunnel closed"
    );
}

fn closed(out: relay::RelayOutcome) -> (CloseReason, [u64; 2]) {
    (out.reason, [out.client_to_backend, out.backend_to_client])
}

/// How a promotion went.
enum Promoted {
    /// Spliced; with the bytes taken from the receive queues and written by userspace
    /// on the way (client→backend, backend→client).
    Spliced(Box<splice::Spliced>, [u64; 2]),
    /// Back on the relay, for good, and why; with the bytes taken on the way, and those
    /// the kernel moved before it refused the splice.
    Relayed(TcpStream, TcpStream, RelayReason, [u64; 2], [u64; 2]),
    /// Back on the relay for now: a receive queue did not run empty (a fast sender kept
    /// it full while the relay was stopped); everything taken was written, so the relay
    /// goes on and the promotion is tried again later. With the bytes taken.
    Retry(TcpStream, TcpStream, Arc<EbpfDataplane>, [u64; 2]),
    /// The tunnel failed (or a limit was reached) on the way; both sides are closed.
    Closed(CloseReason),
}

/// Moves a relayed tunnel, stopped between two writes, into the splice: the same handoff
/// as at the upgrade ([`open_plain`]): the receive queues emptied with reads that end
/// short, what they held written by userspace (the tunnel's limits still apply), then the
/// sockets into the maps.
async fn promote(
    mut client: TcpStream,
    mut backend: TcpStream,
    ebpf: Arc<EbpfDataplane>,
    settings: &Settings,
    limits: &mut limits::Limits,
    meter: &registry::RelayMeter,
) -> Promoted {
    let (mut from_client, mut from_backend) = (Vec::new(), Vec::new());
    let emptied = empty_queues(&client, &backend, &mut from_client, &mut from_backend);
    let relay_reason = match emptied {
        Ok(true) => None,
        Ok(false) => {
            tracing::debug!(
                taken_bytes = from_client.len() + from_backend.len(),
                "receive queues never ran empty during the promotion; relaying on, for now"
            );
            Some(RelayReason::HandoffBacklog)
        }
        Err(reason) => {
            close_both(&reason, &client, &backend);
            return Promoted::Closed(reason);
        }
    };
    let counts = [from_client.len() as u64, from_backend.len() as u64];
    // What the queues held goes first, in userspace, as the handshake's bytes do; a peer
    // that does not take it is still under the tunnel's limits.
    let delivered = {
        let deliver = async {
            write_owed(&mut client, &from_backend)
                .await
                .map_err(|e| CloseReason::ClientError(Some(e)))?;
            write_owed(&mut backend, &from_client)
                .await
                .map_err(|e| CloseReason::BackendError(Some(e)))
        };
        let limit =
            limits.reached(|| idle_since_ns(meter.last_activity_ns.load(Ordering::Relaxed)));
        tokio::select! {
            result = deliver => result,
            reason = limit => Err(reason),
        }
    };
    if let Err(reason) = delivered {
        close_both(&reason, &client, &backend);
        return Promoted::Closed(reason);
    }
    if relay_reason.is_some() {
        return Promoted::Retry(client, backend, ebpf, counts);
    }
    match Carrier::choose(
        Some(ebpf),
        client,
        backend,
        settings,
        RelayReason::SpliceRefused,
    )
    .await
    {
        Some((Carrier::Spliced(spliced), _)) => Promoted::Spliced(spliced, counts),
        Some((Carrier::Relay(client, backend, reason), kernel_moved)) => {
            Promoted::Relayed(client, backend, reason, counts, kernel_moved)
        }
        Some((Carrier::Lazy(..) | Carrier::Tls(..), _)) => unreachable!("choose makes neither"),
        // Both sides were reset (logged).
        None => Promoted::Closed(CloseReason::Internal(io::Error::other(
            "the splice was refused after bytes moved in the kernel",
        ))),
    }
}

async fn write_owed(to: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    if !bytes.is_empty() {
        to.write_all(bytes).await?;
    }
    Ok(())
}

/// Bytes each side sent along with the handshake: `client`'s are owed to the backend,
/// `backend`'s to the client.
struct Early {
    client: Vec<u8>,
    backend: Vec<u8>,
}

/// Two plaintext sockets: with eBPF loaded, spliced at once when the settings say so
/// (`splice_after_bytes` or `splice_after_ms` 0) and the handoff goes well, else relayed
/// until worth splicing ([`Carrier::Lazy`]); relayed for good without eBPF. `None` when
/// the tunnel failed during the handoff (both sides were reset).
async fn open_plain(
    mut client: TcpStream,
    mut backend: TcpStream,
    mut early: Early,
    mut ebpf: Option<Arc<EbpfDataplane>>,
    settings: &Settings,
) -> Option<(Carrier, Early, [u64; 2])> {
    if let Some(lazy) = ebpf.take_if(|_| !settings.promote.at_once()) {
        // The relay reads whatever follows the handshake: nothing to take from the queues.
        if let Err(err) = deliver_early(&mut client, &mut backend, &early).await {
            tracing::info!(error = %err, "tunnel failed while delivering handshake bytes; resetting both sides");
            sockopt::reset_both(&client, &backend);
            return None;
        }
        let when = relay::PromoteWhen {
            after_bytes: settings.promote.after_bytes,
            at: tokio::time::Instant::now() + settings.promote.after,
        };
        return Some((Carrier::Lazy(client, backend, lazy, when), early, [0, 0]));
    }
    let mut relay_reason = RelayReason::UserspaceDataplane;
    if ebpf.is_some() {
        let emptied = sockio::take_queued(&client, &mut early.client, HANDOFF_READ_LIMIT_BYTES)
            .and_then(|c| {
                sockio::take_queued(&backend, &mut early.backend, HANDOFF_READ_LIMIT_BYTES)
                    .map(|b| c && b)
            });
        match emptied {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    limit_bytes = HANDOFF_READ_LIMIT_BYTES,
                    "receive queues never ran empty during the handoff; relaying in userspace"
                );
                ebpf = None;
                relay_reason = RelayReason::HandoffBacklog;
            }
            Err(err) => {
                tracing::info!(error = %err, "tunnel failed during the handoff; resetting both sides");
                sockopt::reset_both(&client, &backend);
                return None;
            }
        }
    }
    // Early bytes go first, in userspace, before any byte can be redirected.
    if let Err(err) = deliver_early(&mut client, &mut backend, &early).await {
        tracing::info!(error = %err, "tunnel failed while delivering handshake bytes; resetting both sides");
        sockopt::reset_both(&client, &backend);
        return None;
    }
    let (carrier, kernel_moved) =
        Carrier::choose(ebpf, client, backend, settings, relay_reason).await?;
    Some((carrier, early, kernel_moved))
}

/// TLS on at least one side: relayed in userspace. `None` when the tunnel failed while
/// delivering the handshake's early bytes (both sides were reset).
async fn open_tls(
    mut client: ClientStream,
    mut backend: BackendStream,
    early: Early,
) -> Option<(Carrier, Early, [u64; 2])> {
    if let Err(err) = deliver_early(&mut client, &mut backend, &early).await {
        tracing::info!(error = %err, "tunnel failed while delivering handshake bytes; resetting both sides");
        sockopt::reset_both(client.tcp(), backend.tcp());
        return None;
    }
    Some((Carrier::Tls(client, backend), early, [0, 0]))
}

/// Writes the early bytes each side is owed (through TLS where there is TLS), flushed.
async fn deliver_early(
    client: &mut (impl AsyncWrite + Unpin),
    backend: &mut (impl AsyncWrite + Unpin),
    early: &Early,
) -> io::Result<()> {
    if !early.backend.is_empty() {
        client.write_all(&early.backend).await?;
        client.flush().await?;
    }
    if !early.client.is_empty() {
        backend.write_all(&early.client).await?;
        backend.flush().await?;
    }
    Ok(())
}

/// Why a tunnel is relayed in userspace rather than spliced: the `relay_reason` of its log
/// lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayReason {
    /// TLS on at least one side (no kTLS here).
    Tls,
    /// The eBPF dataplane is not loaded.
    UserspaceDataplane,
    /// A receive queue never ran empty during the handoff.
    HandoffBacklog,
    /// The kernel refused to take the sockets into the sockmap.
    SpliceRefused,
    /// It ended before it moved `splice_after_bytes` or lived `splice_after_ms`.
    BelowSpliceThreshold,
}

impl RelayReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::UserspaceDataplane => "userspace_dataplane",
            Self::HandoffBacklog => "handoff_backlog",
            Self::SpliceRefused => "splice_refused",
            Self::BelowSpliceThreshold => "below_splice_threshold",
        }
    }
}

/// What carries a tunnel's bytes.
enum Carrier {
    /// Boxed: its flow-control state is several times the size of the other variants.
    Spliced(Box<splice::Spliced>),
    /// Two plain sockets relayed in userspace, and why.
    Relay(TcpStream, TcpStream, RelayReason),
    /// Two plain sockets relayed until they are worth splicing (`splice_after_bytes`,
    /// `splice_after_ms`), then promoted to the splice.
    Lazy(TcpStream, TcpStream, Arc<EbpfDataplane>, relay::PromoteWhen),
    /// TLS on at least one side: always relayed.
    Tls(ClientStream, BackendStream),
}

impl Carrier {
    /// The kernel splice when eBPF is loaded and the kernel takes the sockets; the relay
    /// otherwise (e.g. a peer already half-closed: only ESTABLISHED sockets can join a
    /// sockmap), with the bytes the kernel moved before it refused. `None` when the
    /// tunnel had to be abandoned (logged).
    async fn choose(
        ebpf: Option<Arc<EbpfDataplane>>,
        client: TcpStream,
        backend: TcpStream,
        settings: &Settings,
        relay_reason: RelayReason,
    ) -> Option<(Self, [u64; 2])> {
        let Some(ebpf) = ebpf else {
            return Some((Self::Relay(client, backend, relay_reason), [0, 0]));
        };
        let (client, backend) = into_std(client, backend)
            .inspect_err(|err| tracing::warn!(error = %err, "cannot leave the runtime"))
            .ok()?;
        let mut refused = match splice::Spliced::start(ebpf, client, backend, &settings.splice) {
            Ok(spliced) => return Some((Self::Spliced(Box::new(spliced)), [0, 0])),
            Err(refused) => refused,
        };
        tracing::info!(error = %refused.error, "kernel refused the splice; relaying");
        let mut kernel_moved = [0, 0];
        if refused.needs_settling() {
            // Rare (a peer's FIN between the two inserts), and it waits for a grace period
            // and for the kernel to send: off the runtime's threads.
            let joined = tokio::task::spawn_blocking(move || {
                let settled = refused.settle();
                (refused, settled)
            })
            .await;
            let (back, settled) = match joined {
                Ok(done) => done,
                Err(err) => {
                    // The sockets went with the task: nothing left to reset.
                    tracing::warn!(error = %err, "settling a refused splice failed");
                    return None;
                }
            };
            refused = back;
            match settled {
                Ok(moved) => kernel_moved = moved,
                Err(err) => {
                    tracing::warn!(error = %err, "refused splice cannot be relayed; resetting");
                    sockopt::reset_both(&refused.client, &refused.backend);
                    return None;
                }
            }
        }
        let (client, backend) = from_std(refused.client, refused.backend)
            .inspect_err(|err| tracing::warn!(error = %err, "cannot rejoin the runtime"))
            .ok()?;
        Some((
            Self::Relay(client, backend, RelayReason::SpliceRefused),
            kernel_moved,
        ))
    }

    fn mode(&self) -> Mode {
        match self {
            Self::Spliced(_) => Mode::Spliced,
            Self::Relay(..) | Self::Lazy(..) | Self::Tls(..) => Mode::Userspace,
        }
    }

    /// Why it is relayed; `None` when spliced.
    fn relay_reason(&self) -> Option<RelayReason> {
        match self {
            Self::Spliced(_) => None,
            Self::Relay(_, _, reason) => Some(*reason),
            Self::Lazy(..) => Some(RelayReason::BelowSpliceThreshold),
            Self::Tls(..) => Some(RelayReason::Tls),
        }
    }
}

fn from_std(
    client: std::net::TcpStream,
    backend: std::net::TcpStream,
) -> io::Result<(TcpStream, TcpStream)> {
    Ok((TcpStream::from_std(client)?, TcpStream::from_std(backend)?))
}

/// Leaves tokio's reactor: a spliced socket must not be polled for readability, or every
/// redirected segment would wake the runtime for nothing.
fn into_std(
    client: TcpStream,
    backend: TcpStream,
) -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    Ok((client.into_std()?, backend.into_std()?))
}

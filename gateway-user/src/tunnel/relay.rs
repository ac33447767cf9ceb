//! The userspace relay: copies bytes both ways with the same half-close semantics as the
//! splice. Used for tunnels with TLS on either side, for plain ones wherever eBPF is not
//! loaded (or the splice was refused), and for plain ones until they are promoted to the
//! splice (see [`PromoteWhen`]).

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    sync::atomic::{AtomicU8, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{tcp, TcpStream},
    sync::{watch, Notify},
};
use tokio_util::either::Either;

use super::{
    buffers::Buffer, close_both, limits::Limits, registry::RelayMeter, CloseReason, Closing,
};
use crate::{
    dataplane::clock::{idle_since_ns, monotonic_coarse_ns},
    tls::{MaybeTls, TlsOverTcp},
};

/// How long a TLS side may take to send its `close_notify` when a limit closes the tunnel.
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);

/// One side of a relayed tunnel: a byte stream over a TCP socket (plain, or TLS over it).
pub trait Duplex: AsyncRead + AsyncWrite + Unpin {
    type Reader<'a>: AsyncRead + ReadReady + Unpin
    where
        Self: 'a;
    type Writer<'a>: AsyncWrite + FinOnClose + Unpin
    where
        Self: 'a;

    /// Borrowed halves to read and write at once. Unlike tokio's owned halves, dropping them
    /// sends nothing (no FIN, no `close_notify`), so a failure can still end in a reset.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// The socket underneath: to reset or shut it down.
    fn socket(&self) -> &TcpStream;
}

/// A reader that can wait for bytes without being given a buffer to read them into.
pub trait ReadReady {
    /// Whether [`ReadReady::poll_read_ready`] means anything: a TLS session cannot tell
    /// that plaintext is there before it has decrypted a record, and says ready at once.
    fn tells_readiness(&self) -> bool;

    /// Ready once a read would find bytes, an end of stream or an error.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A writer whose socket's `close` says all its `shutdown` would: a plain socket, whose
/// close sends the FIN once its receive queue is empty. A TLS writer's shutdown also sends a
/// `close_notify`.
pub trait FinOnClose {
    fn fin_on_close(&self) -> bool;
}

impl FinOnClose for tcp::WriteHalf<'_> {
    fn fin_on_close(&self) -> bool {
        true
    }
}

impl<T> FinOnClose for tokio::io::WriteHalf<T> {
    fn fin_on_close(&self) -> bool {
        false
    }
}

impl<L: FinOnClose, R: FinOnClose> FinOnClose for Either<L, R> {
    fn fin_on_close(&self) -> bool {
        match self {
            Either::Left(l) => l.fin_on_close(),
            Either::Right(r) => r.fin_on_close(),
        }
    }
}

impl ReadReady for tcp::ReadHalf<'_> {
    fn tells_readiness(&self) -> bool {
        true
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsRef::<TcpStream>::as_ref(self).poll_read_ready(cx)
    }
}

impl<T> ReadReady for tokio::io::ReadHalf<T> {
    fn tells_readiness(&self) -> bool {
        false
    }

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<L: ReadReady, R: ReadReady> ReadReady for Either<L, R> {
    fn tells_readiness(&self) -> bool {
        match self {
            Either::Left(l) => l.tells_readiness(),
            Either::Right(r) => r.tells_readiness(),
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Either::Left(l) => l.poll_read_ready(cx),
            Either::Right(r) => r.poll_read_ready(cx),
        }
    }
}

impl Duplex for TcpStream {
    type Reader<'a> = tcp::ReadHalf<'a>;
    type Writer<'a> = tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

impl<T: TlsOverTcp> Duplex for MaybeTls<T> {
    type Reader<'a>
        = Either<tcp::ReadHalf<'a>, tokio::io::ReadHalf<&'a mut T>>
    where
        T: 'a;
    type Writer<'a>
        = Either<tcp::WriteHalf<'a>, tokio::io::WriteHalf<&'a mut T>>
    where
        T: 'a;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        match self {
            Self::Plain(tcp) => {
                let (read, write) = tcp.split();
                (Either::Left(read), Either::Left(write))
            }
            // A TLS session reads and writes through one state: the halves share it.
            Self::Tls(tls) => {
                let (read, write) = tokio::io::split(tls.as_mut());
                (Either::Right(read), Either::Right(write))
            }
        }
    }

    fn socket(&self) -> &TcpStream {
        self.tcp()
    }
}

/// What a relayed tunnel moved, for the close log.
#[derive(Debug)]
pub struct RelayOutcome {
    pub reason: CloseReason,
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// When a relayed plaintext tunnel is to leave for the kernel splice: once both
/// directions together have moved `after_bytes` (counted by the meter, handshake bytes
/// excluded), or at `at`, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct PromoteWhen {
    pub after_bytes: u64,
    pub at: tokio::time::Instant,
}

/// How a relay ended.
pub enum RelayEnd<C, B> {
    /// The tunnel is over: its sockets are closed as the reason calls for.
    Closed(RelayOutcome),
    /// Stopped for promotion: each direction stopped between a write and the next read,
    /// so every byte read was written, and both directions are still open.
    Promote(C, B),
}

/// Relays until both directions have ended (end of stream each way, which for TLS is a
/// `close_notify` or a FIN without one), one side fails (the other is then reset) or a
/// limit is reached (both peers then get a `close_notify` where there is TLS, and a FIN).
/// `counters` count the bytes copied client→backend and backend→client (plaintext bytes,
/// under TLS).
///
/// With `promote`, the relay stops when it says and hands both sockets back
/// ([`RelayEnd::Promote`]), unless a direction has ended by then: a half-closed tunnel
/// stays on the relay (only established sockets can join a sockmap).
pub async fn run<C: Duplex, B: Duplex>(
    mut client: C,
    mut backend: B,
    counters: [Counter; 2],
    meter: &RelayMeter,
    limits: &mut Limits,
    promote: Option<PromoteWhen>,
) -> RelayEnd<C, B> {
    let halves = Halves {
        client: &mut client,
        backend: &mut backend,
        counters: &counters,
        meter,
    };
    match halves.relay(limits, promote).await {
        Round::Closed(reason) => RelayEnd::Closed(finish(reason, client, backend, meter).await),
        Round::Stopped => RelayEnd::Promote(client, backend),
    }
}

/// [`run`] with no promotion: relays until the tunnel is over.
pub async fn run_to_end<C: Duplex, B: Duplex>(
    mut client: C,
    mut backend: B,
    counters: [Counter; 2],
    meter: &RelayMeter,
    limits: &mut Limits,
) -> RelayOutcome {
    let halves = Halves {
        client: &mut client,
        backend: &mut backend,
        counters: &counters,
        meter,
    };
    let reason = match halves.relay(limits, None).await {
        Round::Closed(reason) => reason,
        Round::Stopped => unreachable!("the directions park only for a promotion"),
    };
    finish(reason, client, backend, meter).await
}

/// Closes both sockets of a relay that ended for `reason`.
async fn finish<C: Duplex, B: Duplex>(
    reason: CloseReason,
    mut client: C,
    mut backend: B,
    meter: &RelayMeter,
) -> RelayOutcome {
    if reason.closing() == Closing::Graceful {
        // A TLS peer reads a FIN without `close_notify` as a truncation: say goodbye first,
        // as far as a peer that does not read lets us.
        let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, async {
            let _ = tokio::join!(client.shutdown(), backend.shutdown());
        })
        .await;
    }
    close_both(&reason, client.socket(), backend.socket());
    RelayOutcome {
        reason,
        // The meter: a direction still copying when a limit or an error ended the tunnel
        // has no total of its own, but every byte it copied was counted.
        client_to_backend: meter.bytes[0].load(Ordering::Relaxed),
        backend_to_client: meter.bytes[1].load(Ordering::Relaxed),
    }
}

/// How long a promotion waits for both directions of a relayed tunnel to be idle at once
/// (each waiting for bytes that are not there), copying on meanwhile: stopped then, no
/// direction waits for the other. A tunnel that moves a burst and pauses, as most do, is
/// promoted in its pause. Without this first stage a promotion due mid-burst stopped the
/// direction that reached its read first until the other finished its write, and 1 000
/// tunnels exchanging 256 KiB each way through the bench moved 12.9 Gbit/s against the
/// relay's 20.3.
const IDLE_GRACE: Duration = Duration::from_millis(500);
/// How long the directions may then take to stop, each at its next read whether bytes wait
/// or not (a stream that never pauses is stopped this way). A direction stops only between
/// a write and its next read, so one whose peer does not take what it writes may not stop
/// for long: the attempt is then called off (the other direction, parked meanwhile, goes
/// on) and made again later, rather than freezing the tunnel behind its slowest reader.
const STOP_GRACE: Duration = Duration::from_millis(100);
/// The wait before the first new attempt after one was called off; it doubles with each
/// attempt, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// How a relay ended.
enum Round {
    Closed(CloseReason),
    /// Every direction parked for promotion, both still open.
    Stopped,
}

/// Whether the directions are asked to park (for a promotion) or to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Copy,
    /// Copy on, and say so while waiting for bytes that are not there ([`IDLE_GRACE`]).
    ParkIdle,
    /// Park at the next read ([`STOP_GRACE`]).
    Park,
}

/// What the directions and the relay's loop share to park and resume.
struct Control {
    phase: watch::Sender<Phase>,
    /// Which directions are parked (client→backend, backend→client): waiting to be told
    /// to copy again, or (in [`Phase::ParkIdle`]) waiting for bytes, their read not yet
    /// polled since it found none. Either way the direction holds no byte it read and has
    /// not written, and may be dropped.
    parked: watch::Sender<[bool; 2]>,
    /// Directions that have read their end of stream.
    ended: AtomicU8,
}

struct Halves<'a, C, B> {
    client: &'a mut C,
    backend: &'a mut B,
    counters: &'a [Counter; 2],
    meter: &'a RelayMeter,
}

impl<C: Duplex, B: Duplex> Halves<'_, C, B> {
    /// Copies both ways until the tunnel closes, or, with `promote`, until both directions
    /// are parked between a write and the next read.
    async fn relay(self, limits: &mut Limits, promote: Option<PromoteWhen>) -> Round {
        let meter = self.meter;
        let last_activity = &meter.last_activity_ns;
        let control = Control {
            phase: watch::Sender::new(Phase::Copy),
            parked: watch::Sender::new([false; 2]),
            ended: AtomicU8::new(0),
        };
        let mut parked = control.parked.subscribe();
        let reached = Notify::new();
        let watch = promote.map(|p| (&reached, p.after_bytes));
        let (client_read, client_write) = self.client.halves();
        let (backend_read, backend_write) = self.backend.halves();
        let [to_backend, to_client] = self.counters;
        let upstream = copy_half(
            client_read,
            backend_write,
            Copied::new(to_backend, meter, 0, watch),
            &control,
        );
        let downstream = copy_half(
            backend_read,
            client_write,
            Copied::new(to_client, meter, 1, watch),
            &control,
        );
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        // The next attempt by time; the first one may also come by bytes.
        let attempt_at = tokio::time::sleep_until(promote.map_or_else(far, |p| p.at));
        let by_bytes = reached.notified();
        // The end of the grace the directions have to be idle, then to park.
        let grace = tokio::time::sleep_until(far());
        let limit = limits.reached(|| idle_since_ns(last_activity.load(Ordering::Relaxed)));
        tokio::pin!(upstream, downstream, attempt_at, by_bytes, grace, limit);
        let mut ended = [false; 2];
        let mut promoting = promote.is_some();
        let mut bytes_armed = promote.is_some();
        // The stage of an attempt under way.
        let mut parking = None;
        let mut retry = RETRY_FIRST;
        loop {
            let open = ended == [false, false];
            let mut start_parking = false;
            tokio::select! {
                reason = &mut limit => return Round::Closed(reason),
                () = &mut attempt_at, if promoting && open && parking.is_none() => start_parking = true,
                () = &mut by_bytes, if bytes_armed && promoting && open && parking.is_none() => {
                    bytes_armed = false;
                    start_parking = true;
                }
                () = &mut grace, if parking.is_some() => {
                    if parking == Some(Phase::ParkIdle) {
                        // Never idle both at once: stop each at its next read.
                        parking = Some(Phase::Park);
                        control.phase.send_replace(Phase::Park);
                        grace.as_mut().reset(tokio::time::Instant::now() + STOP_GRACE);
                    } else {
                        // A direction is stuck writing to a peer that does not read: go on
                        // copying, try again later.
                        control.phase.send_replace(Phase::Copy);
                        parking = None;
                        attempt_at.as_mut().reset(tokio::time::Instant::now() + retry);
                        retry = (retry * 2).min(RETRY_MAX);
                        tracing::debug!(
                            retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                            "a direction did not stop for the promotion in time; relaying on"
                        );
                    }
                }
                changed = parked.changed(), if parking.is_some() => {
                    if changed.is_ok() && *parked.borrow_and_update() == [true, true] {
                        return Round::Stopped;
                    }
                }
                result = &mut upstream, if !ended[0] => match result {
                    Ok(()) => ended[0] = true,
                    Err(HalfError::Read(e)) => return Round::Closed(CloseReason::ClientError(Some(e))),
                    Err(HalfError::Write(e)) => return Round::Closed(CloseReason::BackendError(Some(e))),
                },
                result = &mut downstream, if !ended[1] => match result {
                    Ok(()) => ended[1] = true,
                    Err(HalfError::Read(e)) => return Round::Closed(CloseReason::BackendError(Some(e))),
                    Err(HalfError::Write(e)) => return Round::Closed(CloseReason::ClientError(Some(e))),
                },
            }
            if start_parking {
                parking = Some(Phase::ParkIdle);
                control.phase.send_replace(Phase::ParkIdle);
                grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + IDLE_GRACE);
            }
            if ended == [true, true] {
                return Round::Closed(CloseReason::Done);
            }
            if ended != [false, false] && promoting {
                // Half-closed: it stays on the relay; a parked direction goes on.
                promoting = false;
                parking = None;
                control.phase.send_replace(Phase::Copy);
            }
        }
    }
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// Where one direction counts what it copied.
struct Copied<'a> {
    counter: &'a Counter,
    meter: &'a RelayMeter,
    direction: usize,
    /// Told once both directions together have copied this many bytes.
    promote: Option<(&'a Notify, u64)>,
}

impl<'a> Copied<'a> {
    fn new(
        counter: &'a Counter,
        meter: &'a RelayMeter,
        direction: usize,
        promote: Option<(&'a Notify, u64)>,
    ) -> Self {
        Self {
            counter,
            meter,
            direction,
            promote,
        }
    }

    fn add(&mut self, n: u64) {
        self.counter.inc_by(n);
        let bytes = &self.meter.bytes;
        bytes[self.direction].fetch_add(n, Ordering::Relaxed);
        if let Some((reached, after)) = self.promote {
            let total = bytes[0].load(Ordering::Relaxed) + bytes[1].load(Ordering::Relaxed);
            if total >= after {
                reached.notify_one();
                self.promote = None;
            }
        }
    }
}

/// Copies until end of stream, then shuts `to` down for writing (under TLS: `close_notify`,
/// then a FIN). Asked to park (`control`), it does so only while it waits to read: a socket
/// read that did not complete took no byte, and a write is always finished first; parked,
/// it says so and waits to be told to copy again (or is dropped, for the promotion). Asked
/// to say when it is idle, it copies on, and says so while a read waits for bytes. A TLS
/// peer that closes its socket without a `close_notify` reads as `UnexpectedEof`: that too
/// ends the direction, since WebSocket frames delimit themselves and a truncated frame is
/// the endpoint's to notice.
async fn copy_half(
    mut from: impl AsyncRead + ReadReady + Unpin,
    mut to: impl AsyncWrite + FinOnClose + Unpin,
    mut copied: Copied<'_>,
    control: &Control,
) -> Result<(), HalfError> {
    let last_activity = &copied.meter.last_activity_ns;
    let direction = copied.direction;
    let mut phase = control.phase.subscribe();
    let mut idle_phase = control.phase.subscribe();
    // What this direction last said in `control.parked`.
    let mut idle = false;
    let set_idle = |now: bool, idle: &mut bool| {
        if *idle != now {
            *idle = now;
            control.parked.send_modify(|parked| parked[direction] = now);
        }
    };
    loop {
        let read = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p == Phase::Park) => None,
            read = read_lent(&mut from) => Some(read),
            // Reached only while the read waits: no byte is held. The read is made again
            // at the next turn, and says idle no more once it finds bytes.
            _ = idle_phase.wait_for(|p| *p == Phase::ParkIdle), if !idle => {
                set_idle(true, &mut idle);
                continue;
            }
        };
        let Some(read) = read else {
            set_idle(true, &mut idle);
            // The sender outlives this future (the relay's loop owns both).
            let _ = phase.wait_for(|p| *p == Phase::Copy).await;
            set_idle(false, &mut idle);
            continue;
        };
        set_idle(false, &mut idle);
        let read = match read {
            Ok((buf, n)) => Some((buf, n)).filter(|&(_, n)| n > 0),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(HalfError::Read(e)),
        };
        let Some((buf, n)) = read else {
            // The last direction to end: both sockets have now read their peer's FIN, so
            // neither holds an unread byte, and closing them at the tunnel's end (a moment
            // from now) sends this FIN too: a `shutdown` of its own would be one more
            // syscall per tunnel (about 4 µs in the handshake profile). Under TLS the
            // shutdown also sends the `close_notify`.
            let last = control.ended.fetch_add(1, Ordering::AcqRel) == 1;
            if !(last && to.fin_on_close()) {
                to.shutdown().await.map_err(HalfError::Write)?;
            }
            return Ok(());
        };
        last_activity.store(monotonic_coarse_ns(), Ordering::Relaxed);
        to.write_all(&buf[..n]).await.map_err(HalfError::Write)?;
        // A no-op on a socket; under TLS, sends the records the session still holds.
        to.flush().await.map_err(HalfError::Write)?;
        copied.add(n as u64);
        // The buffer goes back here, before the next wait for bytes.
        drop(buf);
    }
}

/// Reads what `from` has into a buffer lent for it (0 bytes: the end of stream). A plain
/// socket is first waited on without a buffer, and read only once it says bytes are there;
/// a read that then finds none (tokio still deems a socket readable after a read that
/// filled the buffer) gives the buffer back and waits again. Cancelled, it has taken
/// nothing: a read either completes in the poll that starts it or takes no byte.
async fn read_lent(from: &mut (impl AsyncRead + ReadReady + Unpin)) -> io::Result<(Buffer, usize)> {
    if !from.tells_readiness() {
        let mut buf = Buffer::lend();
        let n = from.read(&mut buf).await?;
        return Ok((buf, n));
    }
    loop {
        poll_fn(|cx| from.poll_read_ready(cx)).await?;
        let mut buf = Buffer::lend();
        let tried = poll_fn(|cx| {
            let mut read = ReadBuf::new(&mut buf);
            Poll::Ready(match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Pending => None,
                Poll::Ready(result) => Some(result.map(|()| read.filled().len())),
            })
        })
        .await;
        if let Some(result) = tried {
            return result.map(|n| (buf, n));
        }
    }
}

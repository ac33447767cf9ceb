//! The userspace relay: copies bytes both ways with the same half-close semantics as the
//! splice. Used for tunnels with TLS on either side, for plain ones wherever eBPF is not
//! loaded (or the splice was refused), and for plain ones until they are promoted to the
//! splice (see [`PromoteWhen`]).

use std::{io, sync::atomic::Ordering, time::Duration};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{tcp, TcpStream},
    sync::Notify,
};
use tokio_util::{either::Either, sync::CancellationToken};

use super::registry::RelayMeter;
use super::{close_both, limits::Limits, CloseReason, Closing};
use crate::{
    dataplane::clock::{idle_since_ns, monotonic_coarse_ns},
    tls::{MaybeTls, TlsOverTcp},
};

const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// How long a TLS side may take to send its `close_notify` when a limit closes the tunnel.
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);

/// One side of a relayed tunnel: a byte stream over a TCP socket (plain, or TLS over it).
pub trait Duplex: AsyncRead + AsyncWrite + Unpin {
    type Reader<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    type Writer<'a>: AsyncWrite + Unpin
    where
        Self: 'a;

    /// Borrowed halves to read and write at once. Unlike tokio's owned halves, dropping them
    /// sends nothing (no FIN, no `close_notify`), so a failure can still end in a reset.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// The socket underneath: to reset or shut it down.
    fn socket(&self) -> &TcpStream;
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
    mut promote: Option<PromoteWhen>,
) -> RelayEnd<C, B> {
    let mut ended = [false; 2];
    let reason = loop {
        let halves = Halves {
            client: &mut client,
            backend: &mut backend,
            counters: &counters,
            meter,
        };
        match halves.relay(limits, &mut ended, promote).await {
            Round::Closed(reason) => break reason,
            Round::Stopped if ended == [false, false] => {
                return RelayEnd::Promote(client, backend);
            }
            // A direction ended while the other was stopping: relay on, for good.
            Round::Stopped => promote = None,
        }
    };
    if reason.closing() == Closing::Graceful {
        // A TLS peer reads a FIN without `close_notify` as a truncation: say goodbye first,
        // as far as a peer that does not read lets us.
        let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, async {
            let _ = tokio::join!(client.shutdown(), backend.shutdown());
        })
        .await;
    }
    close_both(&reason, client.socket(), backend.socket());
    RelayEnd::Closed(RelayOutcome {
        reason,
        // The meter: a direction still copying when a limit or an error ended the tunnel
        // has no total of its own, but every byte it copied was counted.
        client_to_backend: meter.bytes[0].load(Ordering::Relaxed),
        backend_to_client: meter.bytes[1].load(Ordering::Relaxed),
    })
}

/// How one round of relaying ended.
enum Round {
    Closed(CloseReason),
    /// Every direction still open stopped for promotion.
    Stopped,
}

struct Halves<'a, C, B> {
    client: &'a mut C,
    backend: &'a mut B,
    counters: &'a [Counter; 2],
    meter: &'a RelayMeter,
}

impl<C: Duplex, B: Duplex> Halves<'_, C, B> {
    /// Copies both ways (skipping directions in `ended`, marking those that end) until the
    /// tunnel closes, or, with `promote`, until each open direction has stopped.
    async fn relay(
        self,
        limits: &mut Limits,
        ended: &mut [bool; 2],
        promote: Option<PromoteWhen>,
    ) -> Round {
        let meter = self.meter;
        let last_activity = &meter.last_activity_ns;
        let stop = CancellationToken::new();
        let reached = Notify::new();
        let watch = promote.map(|p| (&reached, p.after_bytes));
        let (client_read, client_write) = self.client.halves();
        let (backend_read, backend_write) = self.backend.halves();
        let [to_backend, to_client] = self.counters;
        let upstream = copy_half(
            client_read,
            backend_write,
            Copied::new(to_backend, meter, 0, watch),
            &stop,
        );
        let downstream = copy_half(
            backend_read,
            client_write,
            Copied::new(to_client, meter, 1, watch),
            &stop,
        );
        let trigger = async {
            match promote {
                Some(when) => tokio::select! {
                    () = tokio::time::sleep_until(when.at) => {}
                    () = reached.notified() => {}
                },
                None => std::future::pending().await,
            }
        };
        let limit = limits.reached(|| idle_since_ns(last_activity.load(Ordering::Relaxed)));
        tokio::pin!(upstream, downstream, trigger, limit);
        let mut stopping = false;
        let mut stopped = [false; 2];
        loop {
            let [up_open, down_open] = [0, 1].map(|i| !ended[i] && !stopped[i]);
            tokio::select! {
                reason = &mut limit => return Round::Closed(reason),
                () = &mut trigger, if !stopping && ended == &[false, false] => {
                    stopping = true;
                    stop.cancel();
                }
                result = &mut upstream, if up_open => match result {
                    Ok(Half::Ended) => ended[0] = true,
                    Ok(Half::Stopped) => stopped[0] = true,
                    Err(HalfError::Read(e)) => return Round::Closed(CloseReason::ClientError(Some(e))),
                    Err(HalfError::Write(e)) => return Round::Closed(CloseReason::BackendError(Some(e))),
                },
                result = &mut downstream, if down_open => match result {
                    Ok(Half::Ended) => ended[1] = true,
                    Ok(Half::Stopped) => stopped[1] = true,
                    Err(HalfError::Read(e)) => return Round::Closed(CloseReason::BackendError(Some(e))),
                    Err(HalfError::Write(e)) => return Round::Closed(CloseReason::ClientError(Some(e))),
                },
            }
            if ended == &[true, true] {
                return Round::Closed(CloseReason::Done);
            }
            if stopping && (0..2).all(|i| ended[i] || stopped[i]) {
                return Round::Stopped;
            }
        }
    }
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// How a direction's copy ended.
enum Half {
    /// End of stream, passed on.
    Ended,
    /// Asked to stop, between a write and the next read.
    Stopped,
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
/// then a FIN), or until `stop` is cancelled while it waits to read: a read is the only
/// point where stopping loses nothing (a socket read that did not complete took no byte;
/// a write is always finished first). A TLS peer that closes its socket without a
/// `close_notify` reads as `UnexpectedEof`: that too ends the direction, since WebSocket
/// frames delimit themselves and a truncated frame is the endpoint's to notice.
async fn copy_half(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut copied: Copied<'_>,
    stop: &CancellationToken,
) -> Result<Half, HalfError> {
    let last_activity = &copied.meter.last_activity_ns;
    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
    loop {
        let read = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(Half::Stopped),
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(HalfError::Read(e)),
        };
        if n == 0 {
            to.shutdown().await.map_err(HalfError::Write)?;
            return Ok(Half::Ended);
        }
        last_activity.store(monotonic_coarse_ns(), Ordering::Relaxed);
        to.write_all(&buf[..n]).await.map_err(HalfError::Write)?;
        // A no-op on a socket; under TLS, sends the records the session still holds.
        to.flush().await.map_err(HalfError::Write)?;
        copied.add(n as u64);
    }
}

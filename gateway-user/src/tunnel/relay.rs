//! The userspace relay: copies bytes both ways with the same half-close semantics as the
//! splice. Used for tunnels with TLS on either side, and for plain ones wherever eBPF is
//! not loaded (or the splice was refused).

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{tcp, TcpStream},
};
use tokio_util::either::Either;

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

/// Relays until both directions have ended (end of stream each way, which for TLS is a
/// `close_notify` or a FIN without one), one side fails (the other is then reset) or a
/// limit is reached (both peers then get a `close_notify` where there is TLS, and a FIN).
/// `counters` count the bytes copied client→backend and backend→client (plaintext bytes,
/// under TLS).
pub async fn run(
    mut client: impl Duplex,
    mut backend: impl Duplex,
    counters: [Counter; 2],
    meter: &RelayMeter,
    limits: &mut Limits,
) -> RelayOutcome {
    let [client_to_backend, backend_to_client] = counters;
    let last_activity = &meter.last_activity_ns;
    let reason = {
        let (client_read, client_write) = client.halves();
        let (backend_read, backend_write) = backend.halves();
        let upstream = copy_half(
            client_read,
            backend_write,
            client_to_backend,
            &meter.bytes[0],
            last_activity,
        );
        let downstream = copy_half(
            backend_read,
            client_write,
            backend_to_client,
            &meter.bytes[1],
            last_activity,
        );
        let limit = limits.reached(|| idle_since_ns(last_activity.load(Ordering::Relaxed)));
        tokio::pin!(upstream, downstream, limit);

        let (mut up, mut down) = (None, None);
        let reason = loop {
            tokio::select! {
                reason = &mut limit => break reason,
                result = &mut upstream, if up.is_none() => match result {
                    Ok(n) => up = Some(n),
                    Err(HalfError::Read(e)) => break CloseReason::ClientError(Some(e)),
                    Err(HalfError::Write(e)) => break CloseReason::BackendError(Some(e)),
                },
                result = &mut downstream, if down.is_none() => match result {
                    Ok(n) => down = Some(n),
                    Err(HalfError::Read(e)) => break CloseReason::BackendError(Some(e)),
                    Err(HalfError::Write(e)) => break CloseReason::ClientError(Some(e)),
                },
            }
            if up.is_some() && down.is_some() {
                break CloseReason::Done;
            }
        };
        reason
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
    RelayOutcome {
        reason,
        // The meter: a direction still copying when a limit or an error ended the tunnel
        // has no total of its own, but every byte it copied was counted.
        client_to_backend: meter.bytes[0].load(Ordering::Relaxed),
        backend_to_client: meter.bytes[1].load(Ordering::Relaxed),
    }
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies until end of stream, then shuts `to` down for writing (under TLS: `close_notify`,
/// then a FIN); returns the bytes copied. A TLS peer that closes its socket without a
/// `close_notify` reads as `UnexpectedEof`: that too ends the direction, since WebSocket
/// frames delimit themselves and a truncated frame is the endpoint's to notice.
async fn copy_half(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counter: Counter,
    copied: &AtomicU64,
    last_activity: &AtomicU64,
) -> Result<u64, HalfError> {
    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(HalfError::Read(e)),
        };
        if n == 0 {
            to.shutdown().await.map_err(HalfError::Write)?;
            return Ok(total);
        }
        last_activity.store(monotonic_coarse_ns(), Ordering::Relaxed);
        to.write_all(&buf[..n]).await.map_err(HalfError::Write)?;
        // A no-op on a socket; under TLS, sends the records the session still holds.
        to.flush().await.map_err(HalfError::Write)?;
        total += n as u64;
        counter.inc_by(n as u64);
        copied.fetch_add(n as u64, Ordering::Relaxed);
    }
}

//! An upgraded WebSocket connection: the handoff from HTTP to a tunnel, and the tunnel's
//! life on the chosen dataplane until both sides have closed.

mod relay;
mod splice;

pub use splice::take_queued;
mod watch;

use std::{fmt, io, time::Instant};

use bytes::Bytes;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    dataplane::Dataplane,
    metrics::{Direction, Metrics, Mode},
};

/// Both sockets of an upgraded connection, plus bytes each side sent along with the
/// handshake that the HTTP layer had already read (they must be delivered first).
pub struct Upgraded {
    pub client: TcpStream,
    /// Read from the client after its request head; owed to the backend.
    pub client_early: Bytes,
    pub backend: TcpStream,
    /// Read from the backend after its 101 head; owed to the client.
    pub backend_early: Bytes,
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
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("closed by both sides"),
            Self::ClientError(Some(e)) => write!(f, "client error: {e}"),
            Self::ClientError(None) => f.write_str("client error"),
            Self::BackendError(Some(e)) => write!(f, "backend error: {e}"),
            Self::BackendError(None) => f.write_str("backend error"),
        }
    }
}

/// Most bytes read from one socket at handoff while waiting for its receive queue to run
/// empty (see [`splice::take_queued`]); a tunnel past it is relayed instead of spliced.
const HANDOFF_READ_LIMIT_BYTES: usize = 256 * 1024;

/// Runs a tunnel to its end on `dataplane` and logs one line when it closes.
pub async fn run(up: Upgraded, dataplane: Dataplane, metrics: Metrics) {
    let started = Instant::now();
    let Upgraded {
        mut client,
        client_early,
        mut backend,
        backend_early,
    } = up;
    let (mut client_early, mut backend_early) = (client_early.to_vec(), backend_early.to_vec());

    let mut ebpf = dataplane.ebpf().cloned();
    if ebpf.is_some() {
        let emptied = splice::take_queued(&client, &mut client_early, HANDOFF_READ_LIMIT_BYTES)
            .and_then(|c| {
                splice::take_queued(&backend, &mut backend_early, HANDOFF_READ_LIMIT_BYTES)
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
            }
            Err(err) => {
                tracing::warn!(error = %err, "tunnel failed during the handoff");
                return;
            }
        }
    }
    // Early bytes go first, in userspace, before any byte can be redirected.
    if let Err(err) = deliver_early(&mut client, &client_early, &mut backend, &backend_early).await
    {
        tracing::warn!(error = %err, "tunnel failed while delivering handshake bytes");
        return;
    }
    metrics.handoff_bytes(Direction::ClientToBackend, client_early.len() as u64);
    metrics.handoff_bytes(Direction::BackendToClient, backend_early.len() as u64);

    let mode = if ebpf.is_some() {
        Mode::Spliced
    } else {
        Mode::Userspace
    };
    tracing::Span::current().record("mode", tracing::field::display(mode));
    metrics.tunnel_opened(mode);
    tracing::debug!("tunnel open");

    let (reason, up_bytes, down_bytes) = match ebpf {
        Some(ebpf) => match into_std(client, backend) {
            Ok((client, backend)) => match splice::run(ebpf, client, backend).await {
                Ok(out) => {
                    if out.rescued_bytes > 0 {
                        tracing::warn!(bytes = out.rescued_bytes, "bytes forwarded by userspace");
                    }
                    (
                        out.reason,
                        out.client_to_backend.bytes,
                        out.backend_to_client.bytes,
                    )
                }
                Err(err) => (CloseReason::ClientError(Some(err)), 0, 0),
            },
            Err(err) => (CloseReason::ClientError(Some(err)), 0, 0),
        },
        None => {
            let out = relay::run(
                client,
                backend,
                metrics.relayed_bytes(Direction::ClientToBackend),
                metrics.relayed_bytes(Direction::BackendToClient),
            )
            .await;
            (out.reason, out.client_to_backend, out.backend_to_client)
        }
    };
    metrics.tunnel_closed(mode);
    tracing::info!(
        client_to_backend_bytes = up_bytes + client_early.len() as u64,
        backend_to_client_bytes = down_bytes + backend_early.len() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        reason = %reason,
        "tunnel closed"
    );
}

async fn deliver_early(
    client: &mut TcpStream,
    client_early: &[u8],
    backend: &mut TcpStream,
    backend_early: &[u8],
) -> io::Result<()> {
    if !backend_early.is_empty() {
        client.write_all(backend_early).await?;
    }
    if !client_early.is_empty() {
        backend.write_all(client_early).await?;
    }
    Ok(())
}

/// Leaves tokio's reactor: a spliced socket must not be polled for readability, or every
/// redirected segment would wake the runtime for nothing.
fn into_std(
    client: TcpStream,
    backend: TcpStream,
) -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    Ok((client.into_std()?, backend.into_std()?))
}

//! The userspace relay: copies bytes both ways with the same half-close semantics as the
//! splice. Used for TLS streams and wherever eBPF is not loaded.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    close_both,
    limits::{monotonic_coarse_ns, since_ns, Limits},
    CloseReason,
};

const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// What a relayed tunnel moved, for the close log.
#[derive(Debug)]
pub struct RelayOutcome {
    pub reason: CloseReason,
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// Relays until both directions have ended (FIN each way), one side fails (the other is
/// then reset) or a limit is reached (both peers then get a FIN). `counters` count the
/// bytes copied client→backend and backend→client.
pub async fn run(
    mut client: TcpStream,
    mut backend: TcpStream,
    counters: [Counter; 2],
    limits: &Limits,
) -> RelayOutcome {
    let [client_to_backend, backend_to_client] = counters;
    let last_activity = AtomicU64::new(monotonic_coarse_ns());
    // Borrowed halves: unlike tokio's owned halves, dropping them sends no FIN, so a
    // failure can still end in a reset.
    let (reason, up, down) = {
        let (client_read, client_write) = client.split();
        let (backend_read, backend_write) = backend.split();
        let upstream = copy_half(
            client_read,
            backend_write,
            client_to_backend,
            &last_activity,
        );
        let downstream = copy_half(
            backend_read,
            client_write,
            backend_to_client,
            &last_activity,
        );
        let limit = limits.reached(|| since_ns(last_activity.load(Ordering::Relaxed)));
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
        (reason, up, down)
    };
    close_both(&reason, &client, &backend);
    RelayOutcome {
        reason,
        client_to_backend: up.unwrap_or_default(),
        backend_to_client: down.unwrap_or_default(),
    }
}

enum HalfError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies until EOF, then shuts `to` down for writing; returns the bytes copied.
async fn copy_half(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counter: Counter,
    last_activity: &AtomicU64,
) -> Result<u64, HalfError> {
    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await.map_err(HalfError::Read)?;
        if n == 0 {
            to.shutdown().await.map_err(HalfError::Write)?;
            return Ok(total);
        }
        last_activity.store(monotonic_coarse_ns(), Ordering::Relaxed);
        to.write_all(&buf[..n]).await.map_err(HalfError::Write)?;
        total += n as u64;
        counter.inc_by(n as u64);
    }
}

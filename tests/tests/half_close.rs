//! Half-close in each direction. When one side sends FIN, the gateway delivers all its bytes,
//! then half-closes the other side for writing, while the opposite direction keeps flowing;
//! once both directions are closed, both sockets close.
//!
//! Each side sends only once the tunnel has opened ([`tunnels::wait_opened`]), so on the eBPF
//! dataplane the half-closes meet a spliced tunnel, which each test asserts.

use std::time::Duration;

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{random_bytes, seeded_rng, Hasher, Summary},
    dataplane_tests, skip_unprivileged,
    tunnels::{self, assert_spliced},
    wait::within,
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::io::AsyncWriteExt as _;

/// Bytes the client sends.
const CLIENT_BYTES: u64 = 4 << 20;
const CLIENT_HALF_BYTES: usize = 2 << 20;
/// Bytes the backend sends.
const BACKEND_BYTES: u64 = 3 << 20;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What one backend connection sent after its 101 and received after the request head.
struct Seen {
    sent: Summary,
    received: Summary,
}

/// The client sends its bytes and half-closes first; the backend reads to EOF, then answers
/// and closes; the client reads the answer to EOF.
async fn client_half_closes_first(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut rng = seeded_rng(test);
    let backend_seed: u64 = rng.random();
    let mut backend = RawBackend::start(move |mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        let received = conn.read_to_eof().await;
        // Sent only after the client half-closed.
        let mut rng = StdRng::seed_from_u64(backend_seed);
        let sent = conn
            .send_random_then_half_close(&mut rng, BACKEND_BYTES)
            .await;
        Seen { sent, received }
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let baseline = gateway.socket_fd_count();

    let (sent, received) = within(STEP_TIMEOUT, "client half-closes first", async {
        let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/half-close", &[]).await;
        tunnels::wait_opened(&gateway, dataplane, 1.0).await;
        tunnel
            .send_random_then_read_to_eof(&mut rng, CLIENT_BYTES)
            .await
    })
    .await;
    let seen = backend.next_result().await;

    assert_eq!(sent.len, CLIENT_BYTES);
    assert_eq!(
        seen.received, sent,
        "backend got every client byte, then EOF"
    );
    assert_eq!(seen.sent.len, BACKEND_BYTES);
    assert_eq!(
        received, seen.sent,
        "client got every byte the backend sent after the half-close, then EOF"
    );
    if dataplane == Dataplane::Ebpf {
        assert_spliced(&gateway, "client_to_backend", CLIENT_BYTES);
        assert_spliced(&gateway, "backend_to_client", BACKEND_BYTES);
    }
    gateway.wait_tunnels_gone(baseline).await;
}

/// The backend sends its bytes and half-closes first, while the client is sending; the
/// client reads them to EOF, keeps sending, then half-closes; the backend reads it all to EOF.
async fn backend_half_closes_first(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut rng = seeded_rng(test);
    let backend_seed: u64 = rng.random();
    let mut backend = RawBackend::start(move |mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.read_go().await;
        // Keeps reading after its half-close, to the client's EOF.
        let mut rng = StdRng::seed_from_u64(backend_seed);
        let (sent, received) = conn
            .send_random_while_reading(&mut rng, BACKEND_BYTES, async {})
            .await;
        Seen { sent, received }
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let baseline = gateway.socket_fd_count();

    let first = random_bytes(&mut rng, CLIENT_HALF_BYTES);
    let second = random_bytes(&mut rng, CLIENT_HALF_BYTES);
    let mut sent = Hasher::default();
    sent.update(&first);
    sent.update(&second);
    let sent = sent.finish();

    let received = within(STEP_TIMEOUT, "backend half-closes first", async {
        let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/half-close", &[]).await;
        tunnels::wait_opened(&gateway, dataplane, 1.0).await;
        tunnel.send_go().await;
        // The first half goes out while the backend is sending, the second after its EOF.
        let ((), received) = tunnel
            .while_reading_to_eof(async |writer| {
                writer
                    .write_all(&first)
                    .await
                    .expect("client sends the first half");
            })
            .await;
        tunnel
            .stream
            .write_all(&second)
            .await
            .expect("client keeps sending after the backend half-closed");
        tunnel.stream.shutdown().await.expect("client half-closes");
        received
    })
    .await;
    let seen = backend.next_result().await;

    assert_eq!(seen.sent.len, BACKEND_BYTES);
    assert_eq!(
        received, seen.sent,
        "client got every backend byte, then EOF"
    );
    assert_eq!(
        seen.received, sent,
        "backend got every client byte, before and after its own half-close"
    );
    if dataplane == Dataplane::Ebpf {
        assert_spliced(
            &gateway,
            "client_to_backend",
            1 + 2 * CLIENT_HALF_BYTES as u64,
        );
        assert_spliced(&gateway, "backend_to_client", BACKEND_BYTES);
    }
    gateway.wait_tunnels_gone(baseline).await;
}

dataplane_tests!(client_half_closes_first => client_half_closes_first_ebpf, client_half_closes_first_userspace);
dataplane_tests!(backend_half_closes_first => backend_half_closes_first_ebpf, backend_half_closes_first_userspace);

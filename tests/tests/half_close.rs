//! Half-close in each direction. When one side sends FIN, the gateway delivers all its bytes,
//! then half-closes the other side for writing, while the opposite direction keeps flowing;
//! once both directions are closed, both sockets close.

use std::time::Duration;

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{random_bytes, read_to_eof, seeded_rng, write_random, Hasher, Summary},
    dataplane_tests, skip_unprivileged,
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
        let response = conn.switching_protocols();
        conn.stream
            .write_all(&response)
            .await
            .expect("backend writes the 101");
        let received = read_to_eof(&mut conn.stream, &conn.leftover)
            .await
            .expect("backend reads to the client's EOF");
        let mut rng = StdRng::seed_from_u64(backend_seed);
        let sent = write_random(&mut conn.stream, &mut rng, BACKEND_BYTES)
            .await
            .expect("backend sends after the client half-closed");
        conn.stream.shutdown().await.expect("backend half-closes");
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
        let sent = write_random(&mut tunnel.stream, &mut rng, CLIENT_BYTES)
            .await
            .expect("client sends");
        tunnel.stream.shutdown().await.expect("client half-closes");
        let received = read_to_eof(&mut tunnel.stream, &tunnel.leftover)
            .await
            .expect("client reads the backend's answer to EOF");
        (sent, received)
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
        let response = conn.switching_protocols();
        conn.stream
            .write_all(&response)
            .await
            .expect("backend writes the 101");
        let (mut reader, mut writer) = conn.stream.into_split();
        let send = async move {
            let mut rng = StdRng::seed_from_u64(backend_seed);
            let sent = write_random(&mut writer, &mut rng, BACKEND_BYTES)
                .await
                .expect("backend sends");
            writer.shutdown().await.expect("backend half-closes");
            (sent, writer)
        };
        let receive = read_to_eof(&mut reader, &conn.leftover);
        let ((sent, _writer), received) = tokio::join!(send, receive);
        let received =
            received.expect("backend keeps reading after its half-close, to the client's EOF");
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
        let (mut reader, mut writer) = tunnel.stream.split();
        // The first half goes out while the backend is sending, the second after its EOF.
        let (written, received) = tokio::join!(
            writer.write_all(&first),
            read_to_eof(&mut reader, &tunnel.leftover)
        );
        written.expect("client sends the first half");
        let received = received.expect("client reads the backend's bytes to EOF");
        writer
            .write_all(&second)
            .await
            .expect("client keeps sending after the backend half-closed");
        writer.shutdown().await.expect("client half-closes");
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
    gateway.wait_tunnels_gone(baseline).await;
}

dataplane_tests!(client_half_closes_first => client_half_closes_first_ebpf, client_half_closes_first_userspace);
dataplane_tests!(backend_half_closes_first => backend_half_closes_first_ebpf, backend_half_closes_first_userspace);

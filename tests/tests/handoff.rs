//! The handoff from HTTP to the tunnel, where bytes can arrive together with (or right
//! behind) the upgrade heads. Every byte must come out once, in order, on both dataplanes.

use std::{sync::Arc, time::Duration};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{random_bytes, seeded_rng, Hasher, Summary},
    dataplane_tests,
    ends::read_exact_summary,
    skip_unprivileged,
    wait::within,
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::io::AsyncWriteExt as _;

const COALESCED_PAYLOAD_BYTES: usize = 64 * 1024;
const STREAM_BYTES: u64 = 8 << 20;
const EARLY_BYTES: usize = 64 * 1024;
const LATER_BYTES: usize = 1 << 20;
/// Bytes the backend of (a′) sends after the payload: with the payload, under the gateway's
/// 256 KiB handoff read limit, so even if all of it arrives during the handoff the tunnel is
/// still spliced.
const AFTER_PAYLOAD_BYTES: usize = 128 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What one backend connection sent after its 101 and received after the request head.
struct Seen {
    sent: Summary,
    received: Summary,
}

fn empty() -> Summary {
    Summary::of(&[])
}

/// A backend that answers the upgrade, reads to the client's EOF, then half-closes without
/// sending anything.
async fn read_then_half_close(mut conn: RawConn) -> Seen {
    conn.accept_upgrade().await;
    let received = conn.read_to_eof().await;
    conn.stream.shutdown().await.expect("backend half-closes");
    Seen {
        sent: empty(),
        received,
    }
}

/// (a) The backend writes the 101 head and 64 KiB of payload in one `write_all` of one buffer:
/// the client gets the head, then exactly that payload.
async fn backend_101_and_payload_in_one_write(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let payload = Arc::new(random_bytes(&mut seeded_rng(test), COALESCED_PAYLOAD_BYTES));
    let expected = Summary::of(&payload);
    let mut backend = RawBackend::start(move |mut conn: RawConn| {
        let payload = Arc::clone(&payload);
        async move {
            let mut buf = conn.switching_protocols();
            buf.extend_from_slice(&payload);
            conn.stream
                .write_all(&buf)
                .await
                .expect("backend writes the 101 and the payload at once");
            conn.stream.shutdown().await.expect("backend half-closes");
            Seen {
                sent: Summary::of(&payload),
                received: conn.read_to_eof().await,
            }
        }
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let baseline = gateway.socket_fd_count();

    let mut tunnel = within(
        STEP_TIMEOUT,
        "upgrade",
        client::raw_upgrade(gateway.listen_addr(), "/a", &[]),
    )
    .await;
    let received = within(
        STEP_TIMEOUT,
        "client reads the payload to EOF",
        tunnel.read_to_eof(),
    )
    .await;
    tunnel.stream.shutdown().await.expect("client half-closes");
    let seen = backend.next_result().await;

    assert_eq!(seen.sent, expected);
    assert_eq!(
        received, expected,
        "client got the 101 head then exactly the coalesced payload"
    );
    assert_eq!(
        seen.received,
        empty(),
        "backend got nothing after the request"
    );
    drop(tunnel);
    gateway.wait_tunnels_gone(baseline).await;
}

/// (b) The client writes its first bytes the instant it has read the end of the 101 head
/// (same task, no delay) and keeps sending 8 MiB: the backend gets them all, in order.
async fn client_sends_right_after_101(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = RawBackend::start(read_then_half_close).await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let baseline = gateway.socket_fd_count();
    let mut rng = seeded_rng(test);

    let (sent, received) = within(
        STEP_TIMEOUT,
        "client sends 8 MiB right after the 101",
        async {
            let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/b", &[]).await;
            // No await point other than the writes between reading the head and sending.
            tunnel
                .send_random_then_read_to_eof(&mut rng, STREAM_BYTES)
                .await
        },
    )
    .await;
    let seen = backend.next_result().await;

    assert_eq!(sent.len, STREAM_BYTES);
    assert_eq!(
        seen.received, sent,
        "backend got every byte the client sent right after the 101"
    );
    assert_eq!(received, empty(), "client got nothing after the 101");
    gateway.wait_tunnels_gone(baseline).await;
}

/// (c) The client writes the upgrade request and 64 KiB of payload in the same write, before
/// any 101, then 1 MiB more after it: the backend gets the request, then all of it in order.
async fn client_payload_with_request(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = RawBackend::start(read_then_half_close).await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let baseline = gateway.socket_fd_count();
    let mut rng = seeded_rng(test);
    let early = random_bytes(&mut rng, EARLY_BYTES);
    let later = random_bytes(&mut rng, LATER_BYTES);
    let mut sent = Hasher::default();
    sent.update(&early);
    sent.update(&later);
    let sent = sent.finish();

    let received = within(
        STEP_TIMEOUT,
        "client sends payload with its request",
        async {
            let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/c", &early).await;
            tunnel
                .stream
                .write_all(&later)
                .await
                .expect("client sends after the 101");
            tunnel.stream.shutdown().await.expect("client half-closes");
            tunnel.read_to_eof().await
        },
    )
    .await;
    let seen = backend.next_result().await;

    assert_eq!(
        seen.received, sent,
        "backend got the early bytes right after the request, then the rest"
    );
    assert_eq!(received, empty(), "client got nothing after the 101");
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "requests the backend saw: {requests:?}");
    assert_eq!(
        requests[0].method(),
        "GET",
        "request head:\n{}",
        requests[0].text()
    );
    gateway.wait_tunnels_gone(baseline).await;
}

/// (d) The backend sends its 101, then immediately (a separate write, no delay) 8 MiB: the
/// client gets them all, in order.
async fn backend_streams_right_after_101(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let seed: u64 = seeded_rng(test).random();
    let mut backend = RawBackend::start(move |mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        let mut rng = StdRng::seed_from_u64(seed);
        let sent = conn
            .send_random_then_half_close(&mut rng, STREAM_BYTES)
            .await;
        let received = conn.read_to_eof().await;
        Seen { sent, received }
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let baseline = gateway.socket_fd_count();

    let received = within(
        STEP_TIMEOUT,
        "client reads 8 MiB sent right after the 101",
        async {
            let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/d", &[]).await;
            let received = tunnel.read_to_eof().await;
            tunnel.stream.shutdown().await.expect("client half-closes");
            received
        },
    )
    .await;
    let seen = backend.next_result().await;

    assert_eq!(seen.sent.len, STREAM_BYTES);
    assert_eq!(
        received, seen.sent,
        "client got every byte the backend sent right after the 101"
    );
    assert_eq!(
        seen.received,
        empty(),
        "backend got nothing after the request"
    );
    gateway.wait_tunnels_gone(baseline).await;
}

/// (a′) As (a), but the backend keeps its side open until the client has everything, so the
/// tunnel can be spliced (a socket that already got its FIN cannot join a sockmap, which
/// sends (a) to the relay): the coalesced payload must come out once, ahead of the spliced
/// bytes that follow it.
async fn backend_101_and_payload_in_one_write_then_spliced(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut rng = seeded_rng(test);
    let payload = Arc::new(random_bytes(&mut rng, COALESCED_PAYLOAD_BYTES));
    let later_seed: u64 = rng.random();
    let mut backend = RawBackend::start(move |mut conn: RawConn| {
        let payload = Arc::clone(&payload);
        async move {
            let mut buf = conn.switching_protocols();
            buf.extend_from_slice(&payload);
            conn.stream
                .write_all(&buf)
                .await
                .expect("backend writes the 101 and the payload at once");
            // After the handoff: more bytes, then read to the client's EOF and half-close.
            let mut rng = StdRng::seed_from_u64(later_seed);
            let mut sent = Hasher::default();
            sent.update(&payload);
            let later = random_bytes(&mut rng, AFTER_PAYLOAD_BYTES);
            conn.stream
                .write_all(&later)
                .await
                .expect("backend writes more");
            sent.update(&later);
            let received = conn.read_to_eof().await;
            conn.stream.shutdown().await.expect("backend half-closes");
            Seen {
                sent: sent.finish(),
                received,
            }
        }
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();

    let total = (COALESCED_PAYLOAD_BYTES + AFTER_PAYLOAD_BYTES) as u64;
    let mut tunnel = within(
        STEP_TIMEOUT,
        "upgrade",
        client::raw_upgrade(gateway.listen_addr(), "/a2", &[]),
    )
    .await;
    let leftover = std::mem::take(&mut tunnel.leftover);
    let received = within(
        STEP_TIMEOUT,
        "client reads the payload and what followed",
        read_exact_summary(&mut tunnel.stream, &leftover, total),
    )
    .await
    .expect("client reads every byte the backend sent");
    tunnel.stream.shutdown().await.expect("client half-closes");
    let rest = within(STEP_TIMEOUT, "client reads to EOF", tunnel.read_to_eof()).await;
    let seen = backend.next_result().await;

    assert_eq!(
        received, seen.sent,
        "client got the coalesced payload, then the rest, once"
    );
    assert_eq!(rest, empty(), "nothing after the backend's bytes");
    assert_eq!(
        seen.received,
        empty(),
        "backend got nothing after the request"
    );
    let opened = gateway.metrics().metric(
        "gateway_tunnels_opened_total",
        &[("mode", dataplane.tunnel_mode())],
    );
    assert_eq!(
        opened,
        1.0,
        "the tunnel was carried by the {} dataplane",
        dataplane.tunnel_mode()
    );
}

dataplane_tests!(backend_101_and_payload_in_one_write => a_backend_101_and_payload_in_one_write_ebpf, a_backend_101_and_payload_in_one_write_userspace);
dataplane_tests!(backend_101_and_payload_in_one_write_then_spliced => a2_backend_101_and_payload_then_spliced_ebpf, a2_backend_101_and_payload_then_spliced_userspace);
dataplane_tests!(client_sends_right_after_101 => b_client_sends_right_after_101_ebpf, b_client_sends_right_after_101_userspace);
dataplane_tests!(client_payload_with_request => c_client_payload_with_request_ebpf, c_client_payload_with_request_userspace);
dataplane_tests!(backend_streams_right_after_101 => d_backend_streams_right_after_101_ebpf, d_backend_streams_right_after_101_userspace);

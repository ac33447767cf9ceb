//! A reset on one side of a tunnel reaches the other side as a reset, not as a clean EOF
//! and not as a connection left hanging; on both dataplanes.
//!
//! Each side writes only once the tunnel has opened ([`tunnels::wait_opened`]), so on the
//! eBPF dataplane the reset meets a spliced tunnel, which each test asserts.

use std::{io, time::Duration};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client, dataplane_tests,
    ends::read_until_end,
    skip_unprivileged,
    tunnels::{self, assert_spliced},
    wait::within,
    Dataplane, Gateway,
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// What each side writes before its reset.
const WRITE_BYTES: usize = 4096;

/// Writes [`WRITE_BYTES`] of `byte`, then sets `SO_LINGER` 0: dropping `stream` now resets the
/// connection instead of closing it.
async fn write_then_arm_reset(stream: &mut TcpStream, byte: u8, who: &str) {
    stream
        .write_all(&[byte; WRITE_BYTES])
        .await
        .unwrap_or_else(|error| panic!("{who} writes: {error}"));
    socket2::SockRef::from(&*stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

async fn client_reset_reaches_backend(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        read_until_end(&mut conn.stream, &[]).await
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();

    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/reset", &[]).await;
    within(
        STEP_TIMEOUT,
        "the tunnel opens",
        tunnels::wait_opened(&gateway, dataplane, 1.0),
    )
    .await;
    write_then_arm_reset(&mut tunnel.stream, 1, "client").await;
    drop(tunnel); // the client's socket closes with a reset

    let end = within(
        STEP_TIMEOUT,
        "the backend sees the client's reset",
        backend.next_result(),
    )
    .await;
    let err = end
        .ended
        .expect_err("the backend saw a clean EOF, not a reset");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionReset,
        "backend read error: {err}"
    );
    if dataplane == Dataplane::Ebpf {
        assert_spliced(&gateway, "client_to_backend", WRITE_BYTES as u64);
    }
}

async fn backend_reset_reaches_client(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.read_go().await;
        write_then_arm_reset(&mut conn.stream, 2, "backend").await;
        // Dropping the stream here resets the connection.
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();

    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/reset", &[]).await;
    within(
        STEP_TIMEOUT,
        "the tunnel opens",
        tunnels::wait_opened(&gateway, dataplane, 1.0),
    )
    .await;
    tunnel.send_go().await;
    let end = within(
        STEP_TIMEOUT,
        "the client sees the backend's reset",
        read_until_end(&mut tunnel.stream, &[]),
    )
    .await;
    let err = end
        .ended
        .expect_err("the client saw a clean EOF, not a reset");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionReset,
        "client read error: {err}"
    );
    if dataplane == Dataplane::Ebpf {
        assert_spliced(&gateway, "backend_to_client", WRITE_BYTES as u64);
    }
}

dataplane_tests!(client_reset_reaches_backend => client_reset_reaches_backend_ebpf, client_reset_reaches_backend_userspace);
dataplane_tests!(backend_reset_reaches_client => backend_reset_reaches_client_ebpf, backend_reset_reaches_client_userspace);

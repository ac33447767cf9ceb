//! A reset on one side of a tunnel reaches the other side as a reset, not as a clean EOF
//! and not as a connection left hanging; on both dataplanes.

use std::{io, time::Duration};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client, dataplane_tests, skip_unprivileged,
    wait::within,
    Dataplane, Gateway,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads until EOF or an error; returns the bytes read and how it ended.
async fn read_until_end(stream: &mut tokio::net::TcpStream) -> (usize, io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return (total, Ok(())),
            Ok(n) => total += n,
            Err(err) => return (total, Err(err)),
        }
    }
}

async fn client_reset_reaches_backend(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        let response = conn.switching_protocols();
        conn.stream
            .write_all(&response)
            .await
            .expect("backend writes the 101");
        read_until_end(&mut conn.stream).await
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();

    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/reset", &[]).await;
    tunnel
        .stream
        .write_all(&[1u8; 4096])
        .await
        .expect("client writes");
    socket2::SockRef::from(&tunnel.stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(tunnel); // the client's socket closes with a reset

    let (_, ended) = within(
        STEP_TIMEOUT,
        "the backend sees the client's reset",
        backend.next_result(),
    )
    .await;
    let err = ended.expect_err("the backend saw a clean EOF, not a reset");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionReset,
        "backend read error: {err}"
    );
}

async fn backend_reset_reaches_client(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        let response = conn.switching_protocols();
        conn.stream
            .write_all(&response)
            .await
            .expect("backend writes the 101");
        conn.stream
            .write_all(&[2u8; 4096])
            .await
            .expect("backend writes");
        socket2::SockRef::from(&conn.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        // Dropping the stream here resets the connection.
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();

    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/reset", &[]).await;
    let (_, ended) = within(
        STEP_TIMEOUT,
        "the client sees the backend's reset",
        read_until_end(&mut tunnel.stream),
    )
    .await;
    let err = ended.expect_err("the client saw a clean EOF, not a reset");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionReset,
        "client read error: {err}"
    );
}

dataplane_tests!(client_reset_reaches_backend => client_reset_reaches_backend_ebpf, client_reset_reaches_backend_userspace);
dataplane_tests!(backend_reset_reaches_client => backend_reset_reaches_client_ebpf, backend_reset_reaches_client_userspace);

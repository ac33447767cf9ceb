//! Bytes through [`ClientStream`] / [`BackendStream`], plain and TLS.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::fixtures::{ca_file, https_settings, listen, one_site_acceptor, Ca, TempDir};
use crate::{
    config::model::{BackendHost, HostHeader},
    tls::{accept, backend_server_name, client_config, connect, BackendStream, ClientStream},
};

const MIB: usize = 1 << 20;

/// Bytes that do not repeat with any short period (xorshift).
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn one_mib_is_echoed_through_tls_intact() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let settings = https_settings(Some(ca_file(&ca, &dir, "ca.pem")), HostHeader::Preserve);
    let config = client_config(&settings).expect("TLS client");
    let name = backend_server_name(&settings, &BackendHost::Name("www.example.com".into()))
        .expect("server name");
    let (listener, addr) = listen().await;

    let echo = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let (tls, _) = accept(&acceptor, tcp, Duration::from_secs(10))
            .await
            .expect("server handshake");
        let stream = ClientStream::Tls(Box::new(tls));
        assert!(!stream.is_plaintext());
        assert_eq!(
            stream.tcp().local_addr().expect("local address"),
            addr,
            "tcp() is the socket under the TLS session"
        );
        let (mut read, mut write) = tokio::io::split(stream);
        let echoed = tokio::io::copy(&mut read, &mut write).await.expect("echo");
        write.shutdown().await.expect("close_notify and FIN");
        echoed
    });

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = connect(&config, name, tcp).await.expect("client handshake");
    let stream = BackendStream::Tls(Box::new(tls));
    let (mut read, mut write) = tokio::io::split(stream);
    let sent = payload(MIB);
    let expected = Sha256::digest(&sent);
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(16 * 1024 + 7) {
            write.write_all(chunk).await.expect("send");
        }
        // Half-close: close_notify, then the echo still comes back.
        write.shutdown().await.expect("shutdown");
    });
    let mut received = Vec::with_capacity(MIB);
    read.read_to_end(&mut received)
        .await
        .expect("read the echo");
    writer.await.expect("writer task");
    assert_eq!(echo.await.expect("echo task"), MIB as u64);
    assert_eq!(received.len(), MIB);
    assert_eq!(Sha256::digest(&received), expected, "SHA-256 of the echo");
}

#[tokio::test]
async fn plain_streams_are_plaintext_and_give_their_socket_back() {
    let (listener, addr) = listen().await;
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let mut client = BackendStream::Plain(client);
    let server = ClientStream::Plain(server);
    assert!(client.is_plaintext() && server.is_plaintext());
    assert_eq!(server.tcp().local_addr().expect("local address"), addr);
    client.write_all(b"ping").await.expect("write");
    let mut server = server.into_plain().expect("a plain stream is a socket");
    let mut got = [0; 4];
    server.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"ping");
}

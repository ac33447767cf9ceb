//! The TLS server of an HTTPS bind: versions, ALPN, SNI, timeouts and refusals.

use std::time::{Duration, Instant};

use rustls::{
    version::{TLS12, TLS13},
    CipherSuite, ProtocolVersion,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::fixtures::{
    client, handshake, https_bind, listen, one_site_acceptor, path_text, site, Ca, LeafFiles,
    TempDir,
};
use crate::{
    config::model::{Protocol, TlsFiles},
    tls::{
        accept, accept::TlsAcceptError, Acceptor, ServerConfigError, ALPN_HTTP11, PROTOCOL_VERSIONS,
    },
};

const H2: &[u8] = b"h2";

#[tokio::test]
async fn tls13_handshake_reports_what_was_agreed() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let config = client(ca.roots(), &[&TLS13, &TLS12], &[H2, ALPN_HTTP11]);
    let (server, client) = handshake(&acceptor, config, "www.example.com").await;
    let (_, info) = server.expect("server handshake");
    let client = client.expect("client handshake");
    assert_eq!(info.protocol_version, ProtocolVersion::TLSv1_3);
    assert_eq!(info.version_label(), "TLSv1_3");
    assert!(info.suite_label().starts_with("TLS13_"), "{info:?}");
    assert_eq!(info.sni.as_deref(), Some("www.example.com"));
    assert_eq!(info.alpn.as_deref(), Some(ALPN_HTTP11));
    assert_eq!(info.site_index, 0);
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(ALPN_HTTP11));
}

#[tokio::test]
async fn tls12_handshake_when_the_client_offers_only_tls12() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let config = client(ca.roots(), &[&TLS12], &[ALPN_HTTP11]);
    let (server, client) = handshake(&acceptor, config, "www.example.com").await;
    let (_, info) = server.expect("server handshake");
    client.expect("client handshake");
    assert_eq!(info.protocol_version, ProtocolVersion::TLSv1_2);
    // The test keys are ECDSA: an ECDHE-ECDSA AEAD suite.
    assert!(
        matches!(
            info.cipher_suite,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        ),
        "{info:?}"
    );
}

/// A hand-made ClientHello of an old version: `version` in the record and the hello, no
/// `supported_versions` extension (so nothing newer is offered), and otherwise what rustls
/// needs from a TLS 1.2 hello (an AEAD suite, signature algorithms, a group), so that the
/// version is the one thing refused.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x13]); // ECDHE_ECDSA_AES_128_GCM, ..._CBC
    body.extend([0x01, 0x00]); // null compression
    let extensions: &[u8] = &[
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms: ECDSA P-256
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d, // supported_groups: x25519
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
    ];
    body.extend(
        u16::try_from(extensions.len())
            .expect("short")
            .to_be_bytes(),
    );
    body.extend(extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend(u16::try_from(body.len()).expect("short").to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, version[0], version[1]];
    record.extend(u16::try_from(handshake.len()).expect("short").to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn only_tls12_and_tls13_are_enabled() {
    assert_eq!(PROTOCOL_VERSIONS, &[&TLS13, &TLS12]);
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    for suite in &acceptor.config().crypto_provider().cipher_suites {
        let version = suite.version().version;
        assert!(
            version == ProtocolVersion::TLSv1_2 || version == ProtocolVersion::TLSv1_3,
            "{suite:?}"
        );
    }
    // rustls clients cannot offer TLS 1.1 or SSLv3, so send their ClientHello by hand.
    for (label, version) in [("TLS 1.1", [3, 2]), ("SSLv3", [3, 0])] {
        let (listener, addr) = listen().await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        raw.write_all(&legacy_client_hello(version))
            .await
            .expect("send the ClientHello");
        let error = accept(&acceptor, tcp, Duration::from_secs(10))
            .await
            .expect_err(label);
        assert!(
            matches!(
                error,
                TlsAcceptError::Protocol(rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::Tls12NotOffered
                ))
            ),
            "{label}: {error:?}"
        );
        assert_eq!(error.kind(), "protocol");
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).await.expect("read the answer");
        // One plaintext alert record: fatal (2), protocol_version (70).
        assert_eq!(answer.first(), Some(&0x15), "{label}: {answer:?}");
        assert_eq!(&answer[5..], &[2, 70], "{label}: {answer:?}");
    }
}

#[tokio::test]
async fn alpn_is_http11_only() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    assert_eq!(acceptor.config().alpn_protocols, vec![ALPN_HTTP11.to_vec()]);

    let h2_only = client(ca.roots(), &[&TLS13], &[H2]);
    let (server, client_side) = handshake(&acceptor, h2_only, "www.example.com").await;
    match server.expect_err("h2 is refused") {
        TlsAcceptError::Protocol(rustls::Error::NoApplicationProtocol) => {}
        other => panic!("expected no_application_protocol, got {other:?}"),
    }
    assert!(client_side.is_err(), "the client sees the alert");

    let no_alpn = client(ca.roots(), &[&TLS13], &[]);
    let (server, _) = handshake(&acceptor, no_alpn, "www.example.com").await;
    assert_eq!(server.expect("no ALPN is HTTP/1.1").1.alpn, None);
}

#[tokio::test]
async fn sni_selects_exact_then_wildcard_then_the_catch_all() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let wildcard = ca.leaf(&["*.example.com"]);
    let exact = ca.leaf(&["www.example.com"]);
    let fallback = ca.leaf(&["default.test", "unknown.test", "127.0.0.1"]);
    // The wildcard site comes first: the exact name must still win.
    let bind = https_bind(vec![
        site("wild", &["*.example.com"], wildcard.files(&dir, "wild")),
        site("www", &["www.example.com"], exact.files(&dir, "www")),
        site("default", &[], fallback.files(&dir, "default")),
    ]);
    let acceptor = Acceptor::new(&bind).expect("TLS server");
    let cases = [
        ("www.example.com", 1, &exact),
        ("api.example.com", 0, &wildcard),
        ("unknown.test", 2, &fallback),
        // An IP address: the client sends no SNI.
        ("127.0.0.1", 2, &fallback),
    ];
    for (name, site_index, leaf) in cases {
        let config = client(ca.roots(), &[&TLS13], &[ALPN_HTTP11]);
        let (server, client) = handshake(&acceptor, config, name).await;
        let (_, info) = server.expect(name);
        let client = client.expect(name);
        assert_eq!(info.site_index, site_index, "{name}");
        let sni_sent = name.parse::<std::net::IpAddr>().is_err();
        assert_eq!(info.sni.is_some(), sni_sent, "{name}");
        let presented = client.get_ref().1.peer_certificates().expect("peer chain");
        assert_eq!(
            presented.first(),
            Some(&leaf.der),
            "{name}: certificate shown"
        );
        assert_eq!(acceptor.site_for(info.sni.as_deref()), site_index);
    }
}

#[tokio::test]
async fn a_stalled_handshake_times_out() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let (listener, addr) = listen().await;
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let (tcp, _) = listener.accept().await.expect("accept");
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let error = accept(&acceptor, tcp, timeout)
        .await
        .expect_err("nothing was sent");
    assert!(
        matches!(error, TlsAcceptError::Timeout(t) if t == timeout),
        "{error:?}"
    );
    assert_eq!(error.kind(), "timeout");
    assert!(started.elapsed() >= timeout);
}

#[tokio::test]
async fn closing_or_talking_plain_http_is_classified() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let (listener, addr) = listen().await;

    drop(TcpStream::connect(addr).await.expect("connect"));
    let (tcp, _) = listener.accept().await.expect("accept");
    let error = accept(&acceptor, tcp, Duration::from_secs(10))
        .await
        .expect_err("closed");
    assert!(
        matches!(error, TlsAcceptError::ClientClosed(_)),
        "{error:?}"
    );
    assert_eq!(error.kind(), "client_closed");

    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        .await
        .expect("send HTTP");
    let (tcp, _) = listener.accept().await.expect("accept");
    let error = accept(&acceptor, tcp, Duration::from_secs(10))
        .await
        .expect_err("not TLS");
    assert!(matches!(error, TlsAcceptError::Protocol(_)), "{error:?}");
}

#[test]
fn setup_errors_name_the_listener_and_the_file() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let (one, other) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));

    let missing = TlsFiles {
        certificate: dir
            .write("a.crt", &one.cert_pem)
            .with_file_name("missing.crt"),
        private_key: dir.write("a.key", &one.key_pem),
    };
    let error = Acceptor::new(&https_bind(vec![site("a", &[], missing.clone())]))
        .expect_err("missing certificate");
    assert!(matches!(error, ServerConfigError::Pem { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("listener \"a\""), "{message}");
    assert!(
        message.contains(&path_text(&missing.certificate)),
        "{message}"
    );

    let swapped = TlsFiles {
        certificate: missing.private_key.clone(),
        private_key: missing.private_key.clone(),
    };
    let error = Acceptor::new(&https_bind(vec![site("a", &[], swapped)]))
        .expect_err("a key is no certificate");
    assert!(
        error
            .to_string()
            .contains("has no PEM section with a certificate chain"),
        "{error}"
    );

    let mismatched = TlsFiles {
        certificate: dir.write("b.crt", &other.cert_pem),
        private_key: missing.private_key.clone(),
    };
    let error = Acceptor::new(&https_bind(vec![site("a", &[], mismatched)]))
        .expect_err("someone else's key");
    assert!(
        matches!(error, ServerConfigError::KeyMismatch { .. }),
        "{error:?}"
    );

    let mut plain = https_bind(vec![site("a", &[], one.files(&dir, "a"))]);
    plain.protocol = Protocol::Http;
    assert!(matches!(
        Acceptor::new(&plain),
        Err(ServerConfigError::NotHttps { .. })
    ));
}

//! The TLS client towards HTTPS backends: verification, server names, setup errors.

use std::time::Duration;

use rustls::CertificateError;
use rustls_native_certs::CertificateResult;
use tokio::net::TcpStream;

use super::fixtures::{ca_file, https_settings, listen, one_site_acceptor, Ca, TempDir};
use crate::{
    config::model::{BackendHost, BackendSettings, HostHeader, Protocol},
    tls::{
        accept, accept::TlsAcceptError, backend_server_name, client_config, connect, roots,
        roots::RootsError, Acceptor, ClientConfigError, TlsConnectError, ALPN_HTTP11,
    },
};

/// Connects with `settings` to a backend served by `acceptor`, as `host`.
async fn connect_to(
    acceptor: &Acceptor,
    settings: &BackendSettings,
    host: BackendHost,
) -> (
    Result<super::fixtures::Accepted, TlsAcceptError>,
    Result<crate::tls::BackendStream, TlsConnectError>,
) {
    let config = client_config(settings).expect("TLS client");
    let name = backend_server_name(settings, &host).expect("server name");
    let (listener, addr) = listen().await;
    let server = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        accept(acceptor, tcp, Duration::from_secs(10)).await
    };
    let client = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        connect(&config, name, tcp)
            .await
            .map(|tls| crate::tls::BackendStream::Tls(Box::new(tls)))
    };
    tokio::join!(server, client)
}

fn name(host: &str) -> BackendHost {
    BackendHost::Name(host.to_owned())
}

#[tokio::test]
async fn the_trusted_ca_verifies_the_backend_by_name_and_sends_it_as_sni() {
    let (ca, dir) = (Ca::new("backend CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let settings = https_settings(Some(ca_file(&ca, &dir, "ca.pem")), HostHeader::Preserve);
    let (server, client) = connect_to(&acceptor, &settings, name("www.example.com")).await;
    let (_, info) = server.expect("server handshake");
    let client = client.expect("verified");
    assert!(!client.is_plaintext());
    assert_eq!(info.sni.as_deref(), Some("www.example.com"));
    assert_eq!(info.alpn.as_deref(), Some(ALPN_HTTP11));
}

#[tokio::test]
async fn an_ip_backend_gets_no_sni_and_is_verified_by_its_ip() {
    let (ca, dir) = (Ca::new("backend CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let settings = https_settings(Some(ca_file(&ca, &dir, "ca.pem")), HostHeader::Preserve);
    let ip = BackendHost::Ip([127, 0, 0, 1].into());
    let (server, client) = connect_to(&acceptor, &settings, ip).await;
    client.expect("the certificate has the IP");
    assert_eq!(server.expect("server handshake").1.sni, None);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_untrusted() {
    let (ca, other, dir) = (Ca::new("backend CA"), Ca::new("other CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let settings = https_settings(
        Some(ca_file(&other, &dir, "other.pem")),
        HostHeader::Preserve,
    );
    let (server, client) = connect_to(&acceptor, &settings, name("www.example.com")).await;
    let error = client.expect_err("not our CA");
    assert!(
        matches!(
            error,
            TlsConnectError::UntrustedCertificate(CertificateError::UnknownIssuer)
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), "untrusted_certificate");
    // The backend hears why: an alert.
    assert_eq!(server.expect_err("alerted").kind(), "protocol");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    let (ca, dir) = (Ca::new("backend CA"), TempDir::new());
    let (acceptor, _) = one_site_acceptor(&ca, &dir);
    let settings = https_settings(
        Some(ca_file(&ca, &dir, "ca.pem")),
        HostHeader::Override("api.example.net:8443".to_owned()),
    );
    let (server, client) = connect_to(&acceptor, &settings, name("www.example.com")).await;
    let error = client.expect_err("wrong name");
    assert!(
        matches!(error, TlsConnectError::NameMismatch(_)),
        "{error:?}"
    );
    assert_eq!(error.kind(), "name_mismatch");
    // The name checked is the overridden Host without its port.
    let message = error.to_string();
    assert!(message.contains("\"api.example.net\""), "{message}");
    assert_eq!(server.expect_err("alerted").kind(), "protocol");
}

#[test]
fn server_names_follow_the_host_header_settings() {
    let settings = |host_header| https_settings(None, host_header);
    let ip = BackendHost::Ip([10, 0, 0, 4].into());
    let picked = |host_header, host: &BackendHost| {
        backend_server_name(&settings(host_header), host)
            .expect("server name")
            .to_str()
            .into_owned()
    };
    assert_eq!(
        picked(HostHeader::Override("App.test:8443".into()), &ip),
        "app.test"
    );
    assert_eq!(
        picked(HostHeader::FromBackendAddress, &name("b.internal")),
        "b.internal"
    );
    assert_eq!(
        picked(HostHeader::Preserve, &name("b.internal")),
        "b.internal"
    );
    assert_eq!(picked(HostHeader::Preserve, &ip), "10.0.0.4");
}

#[test]
fn setup_errors_are_clear() {
    let dir = TempDir::new();
    let none = roots::from_native(CertificateResult::default()).expect_err("no roots");
    assert!(matches!(none, RootsError::NoSystemRoots { .. }));
    assert!(none.to_string().contains("trusted_ca"), "{none}");

    let key = dir.write("key.pem", &Ca::new("x").leaf(&["a.test"]).key_pem);
    let error = client_config(&https_settings(Some(key), HostHeader::Preserve)).expect_err("a key");
    let message = error.to_string();
    assert!(
        matches!(error, ClientConfigError::Roots { .. }),
        "{error:?}"
    );
    assert!(message.contains("\"tls-backend\""), "{message}");
    assert!(message.contains("key.pem has no PEM section"), "{message}");

    let mut plain = https_settings(None, HostHeader::Preserve);
    plain.protocol = Protocol::Http;
    assert!(matches!(
        client_config(&plain),
        Err(ClientConfigError::NotHttps { .. })
    ));
}

//! Test certificates (a CA and leaves signed by it, written as PEM files), configuration
//! objects around them, and loopback handshakes.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use rustls::{pki_types::ServerName, ClientConfig};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    config::model::{
        BackendSettings, Bind, HostHeader, HostMatch, HostPattern, Protocol, Redirect,
        RedirectTarget, Rule, RuleAction, Site, TlsFiles, TunnelLimits,
    },
    tls::{
        accept,
        accept::{HandshakeInfo, TlsAcceptError},
        Acceptor,
    },
};

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "gateway-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        Self(path)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a PEM file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use test_pki::{Ca, Leaf};

/// Where a [`Leaf`] goes in a listener's configuration.
pub trait LeafFiles {
    /// Writes the certificate and key to `NAME.crt` and `NAME.key` in `dir`.
    fn files(&self, dir: &TempDir, name: &str) -> TlsFiles;
}

impl LeafFiles for Leaf {
    fn files(&self, dir: &TempDir, name: &str) -> TlsFiles {
        let (certificate, private_key) = self.write(&dir.0, name);
        TlsFiles {
            certificate,
            private_key,
        }
    }
}

/// A listener named `name` for `hosts` (none: the catch-all).
pub fn site(name: &str, hosts: &[&str], tls: TlsFiles) -> Site {
    let hosts = if hosts.is_empty() {
        HostMatch::Any
    } else {
        HostMatch::Names(
            hosts
                .iter()
                .map(|host| HostPattern::parse(host).expect("host pattern"))
                .collect(),
        )
    };
    Site {
        listener: name.to_owned(),
        hosts,
        tls: Some(tls),
        rule: Arc::new(Rule {
            name: format!("{name}-rule"),
            listener: name.to_owned(),
            priority: None,
            action: RuleAction::Redirect(Redirect {
                target: RedirectTarget::Url("https://example.com/".to_owned()),
                status: 301,
                include_path: false,
                include_query: false,
            }),
        }),
    }
}

pub fn https_bind(sites: Vec<Site>) -> Bind {
    Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        protocol: Protocol::Https,
        sites,
    }
}

/// One site for `www.example.com` and `127.0.0.1`, its certificate signed by `ca`.
pub fn one_site_acceptor(ca: &Ca, dir: &TempDir) -> (Acceptor, Leaf) {
    let leaf = ca.leaf(&["www.example.com", "127.0.0.1"]);
    let bind = https_bind(vec![site("www", &[], leaf.files(dir, "www"))]);
    (Acceptor::new(&bind).expect("TLS server"), leaf)
}

pub fn https_settings(trusted_ca: Option<PathBuf>, host_header: HostHeader) -> BackendSettings {
    BackendSettings {
        name: "tls-backend".to_owned(),
        port: 443,
        protocol: Protocol::Https,
        request_timeout: Duration::from_secs(30),
        affinity_cookie: None,
        on_backend_down: crate::config::OnBackendDown::Keep,
        load_balancing: crate::config::LoadBalancing::RoundRobin,
        passive: crate::config::PassiveHealth {
            failures: 3,
            ejection: Duration::from_secs(30),
        },
        host_header,
        trusted_ca,
        tunnel: TunnelLimits {
            idle_timeout: Duration::from_secs(300),
            max_lifetime: None,
            max_backlog_bytes: 4 << 20,
            promote: crate::config::Promotion::AT_ONCE,
        },
        probe: None,
    }
}

/// A plain rustls client trusting `roots`, offering `versions` and `alpn`.
pub use test_pki::client_config as client;

pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

pub type Accepted = (tokio_rustls::server::TlsStream<TcpStream>, HandshakeInfo);
pub type Connected = std::io::Result<tokio_rustls::client::TlsStream<TcpStream>>;

/// One handshake over loopback between `acceptor` and a client with `config` asking for
/// `name`; both sides' results.
pub async fn handshake(
    acceptor: &Acceptor,
    config: Arc<ClientConfig>,
    name: &str,
) -> (Result<Accepted, TlsAcceptError>, Connected) {
    let (listener, addr) = listen().await;
    let server = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        accept(acceptor, tcp, Duration::from_secs(10)).await
    };
    let client = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = server_name(name);
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    tokio::join!(server, client)
}

pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).expect("server name")
}

pub fn ca_file(ca: &Ca, dir: &TempDir, name: &str) -> PathBuf {
    dir.write(name, &ca.pem())
}

pub fn path_text(path: &Path) -> String {
    path.display().to_string()
}

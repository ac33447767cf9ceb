//! Clients for the health tests (one request, one raw WebSocket tunnel that echoes through a
//! [`super::backend::HealthBackend`]), and the pieces of their configuration files.

use std::{net::SocketAddr, time::Duration};

use gateway_tests::{
    client::raw_upgrade,
    data::{random_bytes, Hasher, Summary},
    ends::{self, read_exact_summary},
    http,
    http_client::{KeepAlive, Reply},
    wait::within,
};
use rand::RngCore;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

/// How long one request, upgrade or round trip may take.
pub const STEP: Duration = Duration::from_secs(5);

/// The `Host` every client request sends.
const HOST: &str = "app.test";

/// `GET path` on a connection of its own.
pub async fn get(gateway: SocketAddr, path: &str) -> Reply {
    within(STEP, &format!("GET {path}"), async {
        let mut client = KeepAlive::connect(gateway).await;
        client
            .send("GET", path, HOST, &[("Connection", "close")], &[])
            .await
    })
    .await
}

/// `GET path` answered `200`; returns the backend that answered (its `X-Backend`).
pub async fn get_ok(gateway: SocketAddr, path: &str) -> String {
    let reply = get(gateway, path).await;
    assert_eq!(reply.status(), Some(200), "GET {path}:\n{}", reply.text());
    reply
        .header("x-backend")
        .unwrap_or_else(|| panic!("GET {path}: no X-Backend:\n{}", reply.text()))
        .to_owned()
}

/// Sends a WebSocket upgrade for `path` and returns the answer, whatever it is.
pub async fn upgrade_answer(gateway: SocketAddr, path: &str) -> Reply {
    within(STEP, &format!("upgrade {path}"), async {
        let mut client = KeepAlive::connect(gateway).await;
        let request = http::upgrade_request(gateway, path, &http::new_key());
        client.send_raw(&request).await
    })
    .await
}

/// A WebSocket tunnel through the gateway to a `HealthBackend`, which echoes it.
pub struct Tunnel {
    stream: TcpStream,
    leftover: Vec<u8>,
    /// The backend that answered the upgrade (`X-Backend`).
    pub backend: String,
    /// Its number at that backend (`X-Tunnel`).
    pub id: usize,
    /// The client end's address, as `/tunnels` shows it.
    pub local: SocketAddr,
    sent: Hasher,
}

impl Tunnel {
    /// Upgrades `path`; panics unless the answer is a correct `101` from a `HealthBackend`.
    pub async fn open(gateway: SocketAddr, path: &str) -> Self {
        let raw = within(
            STEP,
            &format!("upgrade {path}"),
            raw_upgrade(gateway, path, &[]),
        )
        .await;
        let header = |name: &str| {
            raw.response
                .header(name)
                .unwrap_or_else(|| panic!("101 without {name}:\n{}", raw.response.text()))
                .to_owned()
        };
        let (backend, id) = (header("x-backend"), header("x-tunnel"));
        Self {
            local: raw.stream.local_addr().expect("the tunnel's local address"),
            stream: raw.stream,
            leftover: raw.leftover,
            backend,
            id: id.parse().expect("X-Tunnel is a number"),
            sent: Hasher::default(),
        }
    }

    /// Sends `len` random bytes while reading their echo; panics unless exactly the same
    /// bytes come back (length + SHA-256).
    pub async fn round_trip(&mut self, rng: &mut impl RngCore, len: usize, what: &str) {
        let bytes = random_bytes(rng, len);
        self.sent.update(&bytes);
        let already = std::mem::take(&mut self.leftover);
        let (mut reader, mut writer) = self.stream.split();
        let (written, echoed) = within(STEP, what, async {
            tokio::join!(
                writer.write_all(&bytes),
                read_exact_summary(&mut reader, &already, len as u64)
            )
        })
        .await;
        written.unwrap_or_else(|error| panic!("{what}: send {len} bytes: {error}"));
        let echoed = echoed.unwrap_or_else(|error| panic!("{what}: read the echo: {error}"));
        assert_eq!(echoed, Summary::of(&bytes), "{what}: the echo");
    }

    /// Everything sent so far.
    pub fn sent(&self) -> Summary {
        self.sent.clone().finish()
    }

    /// Waits at most `limit` for the gateway to close the tunnel: a clean EOF with no byte.
    pub async fn expect_closed(&mut self, limit: Duration, what: &str) {
        let already = std::mem::take(&mut self.leftover);
        let end = within(
            limit,
            what,
            ends::read_until_end(&mut self.stream, &already),
        )
        .await;
        assert!(end.ended.is_ok(), "{what}: {}", end.describe());
        assert_eq!(end.received.len, 0, "{what}: bytes after the last echo");
    }

    /// Half-closes and reads to the backend's EOF: the tunnel ends cleanly. Returns
    /// everything sent.
    pub async fn finish(mut self) -> Summary {
        let already = std::mem::take(&mut self.leftover);
        let end = within(STEP, "the tunnel ends", async {
            self.stream.shutdown().await.expect("half-close the tunnel");
            ends::read_until_end(&mut self.stream, &already).await
        })
        .await;
        assert!(end.ended.is_ok(), "the tunnel ends: {}", end.describe());
        assert_eq!(end.received.len, 0, "bytes after the last echo");
        self.sent()
    }
}

/// One http listener on `127.0.0.1:0`, named `main`.
pub fn listener() -> String {
    "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n".to_owned()
}

pub fn pool(name: &str, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|addr| format!("\"{addr}\"")).collect();
    format!(
        "[[backend_pools]]\nname = \"{name}\"\naddresses = [{}]\n\n",
        list.join(", ")
    )
}

/// Plain http settings (port 80: the pool addresses carry theirs) with `extra` lines.
pub fn settings(name: &str, extra: &str) -> String {
    format!("[[backend_settings]]\nname = \"{name}\"\nport = 80\nprotocol = \"http\"\n{extra}\n")
}

/// An http probe of `/health` with `Host: health.test`, every second with a 1 s timeout,
/// plus `extra` lines (thresholds, matching).
pub fn probe(name: &str, extra: &str) -> String {
    format!(
        "[[probes]]\nname = \"{name}\"\nprotocol = \"http\"\nhost = \"health.test\"\n\
         path = \"/health\"\ninterval_secs = 1\ntimeout_secs = 1\n{extra}\n"
    )
}

/// A rule on `main`: to `default` (pool, settings), and `/PREFIX/*` to each of `paths`
/// (prefix, pool, settings).
pub fn rules(default: (&str, &str), paths: &[(&str, &str, &str)]) -> String {
    if paths.is_empty() {
        return format!(
            "[[rules]]\nname = \"all\"\nkind = \"basic\"\nlistener = \"main\"\n\
             backend_pool = \"{}\"\nbackend_settings = \"{}\"\n",
            default.0, default.1
        );
    }
    let mut text = format!(
        "[[rules]]\nname = \"paths\"\nkind = \"path_based\"\nlistener = \"main\"\n\
         default_backend_pool = \"{}\"\ndefault_backend_settings = \"{}\"\n\n",
        default.0, default.1
    );
    for (prefix, pool, settings) in paths {
        text.push_str(&format!(
            "[[rules.path_rules]]\nname = \"{prefix}\"\npaths = [\"/{prefix}/*\"]\n\
             backend_pool = \"{pool}\"\nbackend_settings = \"{settings}\"\n\n"
        ));
    }
    text
}

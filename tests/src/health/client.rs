//! Clients for the health tests: one request, one raw WebSocket tunnel that echoes through a
//! [`super::HealthBackend`].

use std::{net::SocketAddr, time::Duration};

use crate::{
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

//! A WebSocket tunnel kept busy both ways through the gateway: random messages out and
//! their echoes in, until told to finish; then a Close. What went out and what came back
//! are summed (length + SHA-256) for the test to compare with what the backend saw
//! ([`finish_and_check`] does, for tunnels to an [`HttpBackend`]).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::{net::TcpStream, sync::watch, task::JoinHandle};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

use crate::{
    data::{random_bytes, seeded_rng, Hasher, Summary},
    http_backend::HttpBackend,
    http_client::ws_connect_as,
    wait::{eventually, within},
};

/// Largest message sent; each message's length is random below it.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// How long a tunnel may take to finish once told to.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`open_busy`] waits for each upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// One busy tunnel (see the module).
pub struct BusyTunnel {
    echoed: Arc<AtomicU64>,
    finish: watch::Sender<bool>,
    task: JoinHandle<(Summary, Summary)>,
}

impl BusyTunnel {
    pub fn start(ws: WebSocketStream<TcpStream>, mut rng: StdRng) -> Self {
        let echoed = Arc::new(AtomicU64::new(0));
        let (finish, finished) = watch::channel(false);
        let counter = echoed.clone();
        let task = tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let sender = async move {
                let mut sent = Hasher::default();
                while !*finished.borrow() {
                    let len = rng.random_range(1..=MAX_MESSAGE_BYTES);
                    let message = random_bytes(&mut rng, len);
                    sent.update(&message);
                    sink.send(Message::Binary(message.into()))
                        .await
                        .expect("send a message through the tunnel");
                }
                sink.send(Message::Close(None)).await.expect("send Close");
                sent.finish()
            };
            let receiver = async move {
                let mut received = Hasher::default();
                loop {
                    match stream.next().await {
                        Some(Ok(Message::Binary(bytes))) => {
                            received.update(&bytes);
                            counter.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                        }
                        Some(Ok(Message::Close(_))) => break received.finish(),
                        Some(Ok(other)) => panic!("unexpected message {other:?}"),
                        Some(Err(error)) => panic!("read an echoed message: {error}"),
                        None => panic!("the tunnel ended before the Close reply"),
                    }
                }
            };
            tokio::join!(sender, receiver)
        });
        Self {
            echoed,
            finish,
            task,
        }
    }

    /// Bytes echoed back so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::SeqCst)
    }

    /// Stops sending, sends a Close and waits for the Close reply; returns (sent,
    /// received).
    pub async fn finish(self) -> (Summary, Summary) {
        let _ = self.finish.send(true);
        within(FINISH_TIMEOUT, "a busy tunnel finishes", self.task)
            .await
            .expect("busy tunnel task")
    }
}

/// Waits up to `limit` until every tunnel echoed `more` bytes past what it had echoed on
/// the call.
pub async fn wait_flowing(tunnels: &[BusyTunnel], more: u64, limit: Duration, what: &str) {
    let targets: Vec<u64> = tunnels.iter().map(|t| t.echoed() + more).collect();
    eventually(limit, what, || {
        for (i, (tunnel, target)) in tunnels.iter().zip(&targets).enumerate() {
            let echoed = tunnel.echoed();
            if echoed < *target {
                return Err(format!("tunnel {i}: {echoed} bytes echoed of {target}"));
            }
        }
        Ok(())
    })
    .await;
}

/// Opens `count` WebSocket tunnels to `path` (`Host: x.test`) through the gateway listening
/// on `gateway`, each checked to be a `101`, and keeps them busy, each with its own seed
/// drawn from [`seeded_rng`]`(test)`.
pub async fn open_busy(
    gateway: SocketAddr,
    path: &str,
    count: usize,
    test: &str,
) -> Vec<BusyTunnel> {
    let mut seeds = seeded_rng(test);
    let mut tunnels = Vec::new();
    for _ in 0..count {
        let (ws, response) = within(
            UPGRADE_TIMEOUT,
            "WebSocket upgrade",
            ws_connect_as(gateway, "x.test", path, None),
        )
        .await;
        assert_eq!(response.status().as_u16(), 101);
        tunnels.push(BusyTunnel::start(ws, StdRng::seed_from_u64(seeds.random())));
    }
    tunnels
}

/// Finishes every tunnel and checks its bytes at both ends: what each client sent is what
/// came back to it, and what `backend` received on its tunnels (in any order). Returns what
/// each tunnel sent, in the order of `tunnels`.
pub async fn finish_and_check(tunnels: Vec<BusyTunnel>, backend: &HttpBackend) -> Vec<Summary> {
    let mut sent_all = Vec::new();
    for tunnel in tunnels {
        let (sent, received) = tunnel.finish().await;
        assert_eq!(received, sent, "the client got back every byte it sent");
        sent_all.push(sent);
    }
    let mut at_backend = Vec::new();
    for _ in 0..sent_all.len() {
        let record = backend.next_ws_record().await;
        assert_eq!(record.error, None, "backend side of a busy tunnel");
        at_backend.push(record.received);
    }
    let key = |s: &Summary| s.to_string();
    let mut sorted = sent_all.clone();
    sorted.sort_by_key(key);
    at_backend.sort_by_key(key);
    assert_eq!(at_backend, sorted, "the backend received every byte sent");
    sent_all
}

//! A WebSocket tunnel kept busy both ways through the gateway: random messages out and
//! their echoes in, until told to finish; then a Close. What went out and what came back
//! are summed (length + SHA-256) for the test to compare with what the backend saw.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use rand::{rngs::StdRng, Rng as _};
use tokio::{net::TcpStream, sync::watch, task::JoinHandle};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

use crate::{
    data::{random_bytes, Hasher, Summary},
    wait::{eventually, within},
};

/// Largest message sent; each message's length is random below it.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// How long a tunnel may take to finish once told to.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

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

//! One exchange with a WebSocket echo backend through the gateway, as several tests make it:
//! send random binary messages while reading their echoes, then Close; the length + SHA-256
//! of what went out and what came back are returned for the test to compare. Or a few
//! messages one at a time on a tunnel that stays open, and waiting for a tunnel to end.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::{rngs::StdRng, Rng as _};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

use crate::{
    data::{random_bytes, Hasher, Summary},
    wait::within,
};

/// Sends `messages` random messages of `message_bytes` each (from `rng`) and a Close, while
/// reading the echoes until the Close reply; the whole exchange must finish within `limit`.
/// Returns (sent, received).
pub async fn echo_random_messages(
    ws: WebSocketStream<TcpStream>,
    mut rng: StdRng,
    messages: usize,
    message_bytes: usize,
    limit: Duration,
) -> (Summary, Summary) {
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        let mut sent = Hasher::default();
        for _ in 0..messages {
            let message = random_bytes(&mut rng, message_bytes);
            sent.update(&message);
            sink.send(Message::Binary(message.into()))
                .await
                .expect("send a message");
        }
        sink.send(Message::Close(None)).await.expect("send Close");
        sent.finish()
    });
    let receiver = async move {
        let mut received = Hasher::default();
        loop {
            match stream
                .next()
                .await
                .expect("echo stream ended before the Close reply")
                .expect("read an echoed message")
            {
                Message::Binary(bytes) => received.update(&bytes),
                Message::Close(_) => break received.finish(),
                other => panic!("unexpected message {other:?}"),
            }
        }
    };
    let what = format!("{messages} messages of {message_bytes} bytes each way");
    within(limit, &what, async {
        let (sent, received) = tokio::join!(sender, receiver);
        (sent.expect("sender task"), received)
    })
    .await
}

/// Messages [`echo_one_by_one`] sends.
const ONE_BY_ONE_MESSAGES: usize = 64;
/// The largest of them; each one's length is random up to it.
const ONE_BY_ONE_MAX_BYTES: usize = 4096;
/// How long [`echo_one_by_one`] may take.
const ONE_BY_ONE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends 64 random messages of up to 4 KiB, each after the echo of the one before, and
/// keeps the tunnel open; returns it and the length + SHA-256 of what went out and what came
/// back.
pub async fn echo_one_by_one(
    mut ws: WebSocketStream<TcpStream>,
    rng: &mut StdRng,
) -> (WebSocketStream<TcpStream>, Summary, Summary) {
    let (mut sent, mut received) = (Hasher::default(), Hasher::default());
    within(ONE_BY_ONE_TIMEOUT, "an echo exchange", async {
        for _ in 0..ONE_BY_ONE_MESSAGES {
            let len = rng.random_range(1..=ONE_BY_ONE_MAX_BYTES);
            let message = random_bytes(rng, len);
            sent.update(&message);
            ws.send(Message::Binary(message.into()))
                .await
                .expect("send");
            match ws.next().await {
                Some(Ok(Message::Binary(echo))) => received.update(&echo),
                other => panic!("expected an echo, got {other:?}"),
            }
        }
    })
    .await;
    (ws, sent.finish(), received.finish())
}

/// Resolves when the gateway has ended the tunnel (end of stream, or an error after it).
pub async fn ended(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(_)) = ws.next().await {}
}

//! One exchange with a WebSocket echo backend through the gateway, as several tests make it:
//! send random binary messages while reading their echoes, then Close; the length + SHA-256
//! of what went out and what came back are returned for the test to compare.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::rngs::StdRng;
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

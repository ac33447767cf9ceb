//! The plain exchanges one end of a raw tunnel (client or backend) makes: send random bytes
//! and half-close, read to EOF, or both at once. Each panics on an I/O error with a message
//! naming `who` ("client", "backend", "/tunnel/7: client") and the step that failed, and
//! returns the length + SHA-256 of what went each way, for the test to compare.

use std::future::Future;

use rand::RngCore;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::{tcp::WriteHalf, TcpStream},
};

use crate::data::{self, Summary};

/// Writes `len` random bytes from `rng`, then half-closes; returns their summary.
pub async fn send_random_then_half_close(
    writer: &mut (impl AsyncWrite + Unpin),
    rng: &mut impl RngCore,
    len: u64,
    who: &str,
) -> Summary {
    let sent = data::write_random(writer, rng, len)
        .await
        .unwrap_or_else(|error| panic!("{who} sends {len} bytes: {error}"));
    writer
        .shutdown()
        .await
        .unwrap_or_else(|error| panic!("{who} half-closes: {error}"));
    sent
}

/// Reads to EOF; returns the summary of `already` (bytes read earlier, e.g. past an HTTP
/// head) followed by everything read.
pub async fn read_to_eof(
    reader: &mut (impl AsyncRead + Unpin),
    already: &[u8],
    who: &str,
) -> Summary {
    data::read_to_eof(reader, already)
        .await
        .unwrap_or_else(|error| panic!("{who} reads to EOF: {error}"))
}

/// Runs `send` on the write half of `stream` while reading its read half to EOF (`already`
/// first); returns what `send` returned and the summary of what was read.
pub async fn while_reading_to_eof<T>(
    stream: &mut TcpStream,
    already: &[u8],
    who: &str,
    send: impl AsyncFnOnce(&mut WriteHalf<'_>) -> T,
) -> (T, Summary) {
    let (mut reader, mut writer) = stream.split();
    tokio::join!(send(&mut writer), read_to_eof(&mut reader, already, who))
}

/// Sends `len` random bytes from `rng` and, once `before_close` is done, half-closes, all
/// while reading to EOF (`already` first); returns (sent, received).
pub async fn send_random_while_reading(
    stream: &mut TcpStream,
    already: &[u8],
    rng: &mut impl RngCore,
    len: u64,
    before_close: impl Future,
    who: &str,
) -> (Summary, Summary) {
    while_reading_to_eof(stream, already, who, async |writer| {
        let sent = data::write_random(writer, rng, len)
            .await
            .unwrap_or_else(|error| panic!("{who} sends {len} bytes: {error}"));
        before_close.await;
        writer
            .shutdown()
            .await
            .unwrap_or_else(|error| panic!("{who} half-closes: {error}"));
        sent
    })
    .await
}

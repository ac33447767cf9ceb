//! Hostile-slow clients, as slowhttptest plays them: readers that stop taking an answer
//! (with a small receive window, so the kernel does not absorb the answer for them), and
//! uploaders that send a request head and then their body a little at a time.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};

use crate::{
    http::{self, Head},
    wait::within,
};

/// A slow reader's receive buffer (the kernel doubles it): slowhttptest's slow-read attack
/// advertises windows of a few hundred bytes.
pub const SMALL_RCVBUF_BYTES: u32 = 4096;

/// How long a step of a slow client may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `addr` with a receive buffer of [`SMALL_RCVBUF_BYTES`], set before the
/// connect so the window it advertises is small from the handshake on.
pub async fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .set_recv_buffer_size(SMALL_RCVBUF_BYTES)
        .expect("set SO_RCVBUF");
    socket.connect(addr).await.expect("connect to the gateway")
}

/// Sends `GET path` asking the backend for `reply_bytes` (`X-Reply-Bytes`, with `X-Seed`
/// for a [`crate::bulk_backend::BulkBackend`]).
pub async fn send_get(stream: &mut TcpStream, path: &str, reply_bytes: u64, seed: u64) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x.test\r\nX-Reply-Bytes: {reply_bytes}\r\nX-Seed: {seed}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
}

/// Reads an answer's head; returns it and the body bytes that came with it. The caller
/// then reads on, or stops.
pub async fn read_answer_head(stream: &mut TcpStream) -> (Head, Vec<u8>) {
    within(
        STEP_TIMEOUT,
        "the answer's head",
        http::read_head(&mut *stream),
    )
    .await
    .expect("read the answer's head")
}

/// [`send_get`], then [`read_answer_head`].
pub async fn get_head(
    stream: &mut TcpStream,
    path: &str,
    reply_bytes: u64,
    seed: u64,
) -> (Head, Vec<u8>) {
    send_get(stream, path, reply_bytes, seed).await;
    read_answer_head(stream).await
}

/// How a request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    Chunked,
}

impl Framing {
    /// The request head of a `POST path` carrying `len` bytes framed this way.
    pub fn head(self, path: &str, len: usize) -> String {
        let framing = match self {
            Self::ContentLength => format!("Content-Length: {len}"),
            Self::Chunked => "Transfer-Encoding: chunked".to_owned(),
        };
        format!("POST {path} HTTP/1.1\r\nHost: x.test\r\n{framing}\r\n\r\n")
    }

    /// `piece` of the body as it goes on the wire: as is, or as one chunk.
    pub fn piece(self, piece: &[u8]) -> Vec<u8> {
        match self {
            Self::ContentLength => piece.to_vec(),
            Self::Chunked => {
                let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                chunk.extend_from_slice(piece);
                chunk.extend_from_slice(b"\r\n");
                chunk
            }
        }
    }

    /// What ends the body on the wire: nothing, or the last chunk.
    pub fn end(self) -> &'static [u8] {
        match self {
            Self::ContentLength => b"",
            Self::Chunked => b"0\r\n\r\n",
        }
    }
}

/// Reads `stream` until it ends, by EOF or an error (a reset); returns the bytes read.
pub async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut all = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return (all, Ok(())),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(error) => return (all, Err(error)),
        }
    }
}

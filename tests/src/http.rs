//! Just enough HTTP/1.1 to write WebSocket upgrades by hand and read the answers. Parsing is
//! sans-io (bytes in, result out); [`read_head`] and [`read_body`] add the reading.

use std::{io, net::SocketAddr};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` to compute `Sec-WebSocket-Accept`.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Longest head the readers accept before giving up.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// `Sec-WebSocket-Accept` for `key`: base64(sha1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    BASE64.encode(Sha1::digest(format!("{key}{WEBSOCKET_GUID}")))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn new_key() -> String {
    BASE64.encode(rand::random::<[u8; 16]>())
}

/// A valid upgrade request for `path` on `host`.
pub fn upgrade_request(host: SocketAddr, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// A backend's `101 Switching Protocols` answer to a request carrying `key`.
pub fn switching_protocols(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}

/// Offset just past the `\r\n\r\n` that ends the head at the start of `buf`, if complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// A parsed request or response head.
#[derive(Clone, Debug)]
pub struct Head {
    /// The head as received, including the final blank line.
    pub raw: Vec<u8>,
    /// `GET / HTTP/1.1` or `HTTP/1.1 101 Switching Protocols`.
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Parses a complete head (as delimited by [`head_end`]).
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| format!("head is not UTF-8: {}", String::from_utf8_lossy(raw)))?;
        let mut lines = text.split("\r\n").filter(|line| !line.is_empty());
        let start_line = lines.next().ok_or("empty head")?.to_owned();
        let headers = lines
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
                Ok((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            raw: raw.to_vec(),
            start_line,
            headers,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(have, _)| have.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The status code of a response head.
    pub fn status(&self) -> Option<u16> {
        self.start_line.split(' ').nth(1)?.parse().ok()
    }

    /// The method of a request head.
    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or_default()
    }

    /// The target of a request head.
    pub fn path(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or_default()
    }

    /// The head as text, for failure messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// Reads a head; returns it and the bytes read past its end.
pub async fn read_head(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "end of stream before the end of the head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        // Only the new bytes and the 3 before them can complete the terminator.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&buf[from..]).map(|end| from + end) {
            let rest = buf.split_off(end);
            let head =
                Head::parse(&buf).map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
            return Ok((head, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "head longer than 64 KiB",
            ));
        }
    }
}

/// How much of a message body a buffer holds, by the framing its head announces.
pub fn complete_body(head: &Head, buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if head
        .header("transfer-encoding")
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"))
    {
        return dechunk(buf);
    }
    let len: usize = match head.header("content-length") {
        Some(value) => value
            .parse()
            .map_err(|_| format!("bad Content-Length {value:?}"))?,
        None => return Ok(None),
    };
    Ok((buf.len() >= len).then(|| buf[..len].to_vec()))
}

/// Decodes a chunked body, or `None` while the last chunk has not arrived.
fn dechunk(mut buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = buf.windows(2).position(|window| window == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        let data = &buf[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        buf = &data[size + 2..];
    }
}

/// Reads the body that follows `head` (`already` holds bytes read past the head): by
/// `Content-Length`, chunked, or to end of stream when neither is given.
pub async fn read_body(
    reader: &mut (impl AsyncRead + Unpin),
    head: &Head,
    already: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let mut buf = already;
    let mut chunk = [0; 4096];
    loop {
        if let Some(body) = complete_body(head, &buf)
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?
        {
            return Ok(body);
        }
        match reader.read(&mut chunk).await? {
            0 if head.header("content-length").is_none()
                && head.header("transfer-encoding").is_none() =>
            {
                return Ok(buf);
            }
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of stream inside the body",
                ))
            }
            read => buf.extend_from_slice(&chunk[..read]),
        }
    }
}

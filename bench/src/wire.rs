//! The benchmark's upgrade protocol, sans-io: bytes in, decision out, so both sides can be
//! unit-tested without sockets and the same code serves the async and the blocking client.
//!
//! A client asks for `GET /bench/{mode}` with an RFC 6455 upgrade; the backend answers `101`
//! with the right `Sec-WebSocket-Accept`. The proxies under test only forward the upgrade and
//! then carry opaque bytes, so after the `101` both sides speak raw bytes, not frames: the
//! work per byte is the same for every proxy. What the bytes are depends on the [`Mode`].
//!
//! Every length is in the path, so neither side needs a half-close to mark the end of its
//! bytes: nginx tears down an upgraded connection in both directions as soon as either peer
//! half-closes, so "read to EOF, then answer" would never get its answer through nginx.
//! Each side half-closes only once it has received everything it expects.
use std::fmt;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

/// The GUID of RFC 6455 §1.3, appended to the key to compute `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest head either side accepts. Proxies add a few headers (X-Forwarded-*, Via); a head
/// past this is a defect, and refusing it keeps a broken peer from growing a buffer forever.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most headers parsed in one head; proxies add several, so leave room.
const MAX_HEADERS: usize = 64;

/// Length of the summary a backend writes once it has read all of a client's bytes:
/// the byte count (u64, big-endian) then the CRC-32 (u32, big-endian).
pub const SUMMARY_LEN: usize = 12;

/// What the backend does with a tunnel once it has answered `101`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read this many bytes, then write the summary of what was read and shut down the
    /// write side.
    Sink(u64),
    /// Write this many payload bytes, then shut down the write side.
    Source(u64),
    /// Write this many payload bytes while reading as many of the client's; after both, write
    /// the summary of what was read and shut down the write side.
    Both(u64),
    /// Echo every byte until EOF, then close.
    Echo,
}

impl Mode {
    /// The request path that asks for this mode.
    pub fn path(self) -> String {
        match self {
            Self::Sink(n) => format!("/bench/sink/{n}"),
            Self::Source(n) => format!("/bench/source/{n}"),
            Self::Both(n) => format!("/bench/both/{n}"),
            Self::Echo => "/bench/echo".to_owned(),
        }
    }

    /// The mode a request path asks for, if it names one.
    pub fn from_path(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/bench/")?;
        let (name, count) = match rest.split_once('/') {
            Some((name, count)) => (name, Some(count.parse::<u64>().ok()?)),
            None => (rest, None),
        };
        match (name, count) {
            ("sink", Some(n)) => Some(Self::Sink(n)),
            ("echo", None) => Some(Self::Echo),
            ("source", Some(n)) => Some(Self::Source(n)),
            ("both", Some(n)) => Some(Self::Both(n)),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Why a handshake was refused. The backend sends the text back in its `400`, the client puts
/// it in the error of the `upgrade` stage.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head grew past [`MAX_HEAD_BYTES`] without ending.
    HeadTooLarge,
    /// Not HTTP/1.x, or more than [`MAX_HEADERS`] headers.
    Malformed(httparse::Error),
    /// A request whose method is not `GET`.
    Method(String),
    /// A request path that names no [`Mode`].
    Path(String),
    /// A required header is missing or has the wrong value.
    Header {
        name: &'static str,
        value: Option<String>,
    },
    /// A response other than `101`.
    Status { code: u16, reason: String },
    /// A `101` whose `Sec-WebSocket-Accept` is not the one for our key.
    Accept {
        expected: String,
        got: Option<String>,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadTooLarge => write!(f, "head longer than {MAX_HEAD_BYTES} bytes"),
            Self::Malformed(e) => write!(f, "malformed head: {e}"),
            Self::Method(m) => write!(f, "method {m:?}, expected GET"),
            Self::Path(p) => write!(
                f,
                "path {p:?} names no mode (expected /bench/echo, /bench/sink/N, /bench/source/N or /bench/both/N)"
            ),
            Self::Header { name, value: None } => write!(f, "missing header {name}"),
            Self::Header { name, value: Some(v) } => write!(f, "header {name}: {v:?} is not valid"),
            Self::Status { code, reason } => write!(f, "status {code} {reason}, expected 101"),
            Self::Accept { expected, got } => {
                write!(f, "Sec-WebSocket-Accept {got:?}, expected {expected:?}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let digest = Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(WEBSOCKET_GUID.as_bytes())
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The client's side of one upgrade: build the request, then feed it the bytes that arrive
/// until it has the whole response head.
#[derive(Debug)]
pub struct ClientHandshake {
    expected_accept: String,
    head: Vec<u8>,
}

impl ClientHandshake {
    /// A handshake with a fresh random key, and the request bytes to send.
    pub fn new(mode: Mode) -> (Self, Vec<u8>) {
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        Self::with_key(mode, &key)
    }

    fn with_key(mode: Mode, key: &str) -> (Self, Vec<u8>) {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            mode.path()
        );
        let handshake = Self {
            expected_accept: accept_key(key),
            head: Vec::new(),
        };
        (handshake, request.into_bytes())
    }

    /// Takes the next bytes read from the socket. `Ok(Some(leftover))` once the response head
    /// is complete and valid: `leftover` are the bytes after it, already tunnel payload (a
    /// `source` backend writes right after its `101`, often in the same segment).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, HandshakeError> {
        self.head.extend_from_slice(bytes);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response
            .parse(&self.head)
            .map_err(HandshakeError::Malformed)?
        {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if self.head.len() > MAX_HEAD_BYTES => {
                return Err(HandshakeError::HeadTooLarge)
            }
            httparse::Status::Partial => return Ok(None),
        };
        let code = response
            .code
            .expect("a complete response has a status code");
        if code != 101 {
            let reason = response.reason.unwrap_or_default().to_owned();
            return Err(HandshakeError::Status { code, reason });
        }
        let got = header(response.headers, "sec-websocket-accept").map(str::to_owned);
        if got.as_deref() != Some(self.expected_accept.as_str()) {
            return Err(HandshakeError::Accept {
                expected: self.expected_accept.clone(),
                got,
            });
        }
        Ok(Some(self.head.split_off(head_len)))
    }
}

/// A request the backend accepted: what to do, what to answer, and any bytes the client sent
/// after its head (tunnel payload).
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub mode: Mode,
    pub response: Vec<u8>,
    pub leftover: Vec<u8>,
}

/// The backend's side of one upgrade: feed it bytes until the request head is complete.
#[derive(Debug, Default)]
pub struct ServerHandshake {
    head: Vec<u8>,
}

impl ServerHandshake {
    /// Takes the next bytes read from the socket; `Ok(Some(..))` once the request head is
    /// complete and asks for a valid upgrade to a known mode.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Upgrade>, HandshakeError> {
        self.head.extend_from_slice(bytes);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request
            .parse(&self.head)
            .map_err(HandshakeError::Malformed)?
        {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if self.head.len() > MAX_HEAD_BYTES => {
                return Err(HandshakeError::HeadTooLarge)
            }
            httparse::Status::Partial => return Ok(None),
        };
        let method = request.method.expect("a complete request has a method");
        if method != "GET" {
            return Err(HandshakeError::Method(method.to_owned()));
        }
        let path = request.path.expect("a complete request has a path");
        let mode = Mode::from_path(path).ok_or_else(|| HandshakeError::Path(path.to_owned()))?;
        let headers = request.headers;
        require_token(headers, "upgrade", "websocket")?;
        require_token(headers, "connection", "upgrade")?;
        let version = header(headers, "sec-websocket-version");
        if version != Some("13") {
            return Err(bad_header("Sec-WebSocket-Version", version));
        }
        let key = header(headers, "sec-websocket-key");
        let decoded = key.map(|k| base64::engine::general_purpose::STANDARD.decode(k));
        let key = match (key, decoded) {
            (Some(key), Some(Ok(raw))) if raw.len() == 16 => key,
            _ => return Err(bad_header("Sec-WebSocket-Key", key)),
        };
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        );
        Ok(Some(Upgrade {
            mode,
            response: response.into_bytes(),
            leftover: self.head.split_off(head_len),
        }))
    }
}

/// The `400` a backend sends for a refused handshake, with the reason as the body.
pub fn bad_request(error: &HandshakeError) -> Vec<u8> {
    let body = format!("{error}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The first header with this (lowercase) name, if its value is text.
fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// Requires some header `name` to list `token` (case-insensitive, comma-separated), as
/// proxies rewrite case (`Connection: upgrade`) and may add tokens (`keep-alive, Upgrade`).
fn require_token(
    headers: &[httparse::Header<'_>],
    name: &'static str,
    token: &str,
) -> Result<(), HandshakeError> {
    let mut values = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let found = values.clone().any(|h| {
        std::str::from_utf8(h.value)
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    });
    if found {
        return Ok(());
    }
    let value = values
        .next()
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Err(HandshakeError::Header {
        name: canonical(name),
        value,
    })
}

/// The usual spelling of a header name, for messages.
fn canonical(name: &'static str) -> &'static str {
    match name {
        "upgrade" => "Upgrade",
        "connection" => "Connection",
        other => other,
    }
}

fn bad_header(name: &'static str, value: Option<&str>) -> HandshakeError {
    HandshakeError::Header {
        name,
        value: value.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 6455 §1.3.
    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn modes_round_trip_through_paths() {
        for mode in [
            Mode::Sink(3),
            Mode::Echo,
            Mode::Source(0),
            Mode::Both(1 << 40),
        ] {
            assert_eq!(Mode::from_path(&mode.path()), Some(mode));
        }
        for bad in [
            "/bench/source",
            "/bench/sink",
            "/bench/echo/3",
            "/bench/both/x",
            "/other",
        ] {
            assert_eq!(Mode::from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_split_across_reads_is_accepted_with_leftover() {
        let (mut client, request) = ClientHandshake::new(Mode::Both(5));
        let (most, end) = request.split_at(request.len() - 3);
        let mut server = ServerHandshake::default();
        for piece in most.chunks(7) {
            let partial = server.feed(piece).expect("valid so far");
            assert_eq!(partial, None, "head completed before its end");
        }
        let last = [end, b"early payload"].concat();
        let upgrade = server
            .feed(&last)
            .expect("valid request")
            .expect("complete request");
        assert_eq!(upgrade.mode, Mode::Both(5));
        assert_eq!(upgrade.leftover, b"early payload");

        let mut response = upgrade.response.clone();
        response.extend_from_slice(b"\x00\x01payload");
        let (first, rest) = response.split_at(10);
        assert_eq!(client.feed(first).expect("partial response"), None);
        let leftover = client
            .feed(rest)
            .expect("valid response")
            .expect("complete response");
        assert_eq!(leftover, b"\x00\x01payload");
    }

    /// nginx and HAProxy lowercase header values and names and add their own headers.
    #[test]
    fn proxy_rewritten_request_is_accepted() {
        let request = "GET /bench/echo HTTP/1.1\r\nhost: bench\r\nx-forwarded-for: 127.0.0.1\r\n\
                       upgrade: websocket\r\nconnection: keep-alive, upgrade\r\n\
                       sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       sec-websocket-version: 13\r\nX-Forwarded-Proto: http\r\n\r\n";
        let upgrade = ServerHandshake::default()
            .feed(request.as_bytes())
            .expect("valid request")
            .expect("complete request");
        assert_eq!(upgrade.mode, Mode::Echo);
        let response = String::from_utf8(upgrade.response).expect("ascii response");
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(upgrade.leftover.is_empty());
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let base = "GET /bench/sink/1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let cases = [
            (base.replace("GET", "POST"), "method"),
            (base.replace("/bench/sink/1", "/bench/nope"), "path"),
            (base.replace("Upgrade: websocket\r\n", ""), "Upgrade"),
            (
                base.replace("Connection: Upgrade", "Connection: close"),
                "Connection",
            ),
            (
                base.replace("Version: 13", "Version: 8"),
                "Sec-WebSocket-Version",
            ),
            (
                base.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
                "Sec-WebSocket-Key",
            ),
        ];
        for (request, word) in cases {
            let error = ServerHandshake::default()
                .feed(request.as_bytes())
                .expect_err("request must be refused");
            assert!(
                error.to_string().contains(word),
                "{error} should mention {word}"
            );
            let answer = String::from_utf8(bad_request(&error)).expect("ascii answer");
            assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        }
    }

    #[test]
    fn endless_head_is_refused() {
        let mut server = ServerHandshake::default();
        let start = b"GET /bench/sink/1 HTTP/1.1\r\nX: ";
        assert_eq!(server.feed(start).expect("partial"), None);
        let result = server.feed(&vec![b'a'; MAX_HEAD_BYTES]);
        assert_eq!(result, Err(HandshakeError::HeadTooLarge));
    }

    #[test]
    fn client_refuses_wrong_status_and_wrong_accept() {
        let (mut client, _) = ClientHandshake::new(Mode::Echo);
        let error = client
            .feed(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .expect_err("502 is not an upgrade");
        assert!(
            matches!(error, HandshakeError::Status { code: 502, .. }),
            "{error}"
        );

        let (mut client, _) = ClientHandshake::with_key(Mode::Echo, "AAAAAAAAAAAAAAAAAAAAAA==");
        let error = client
            .feed(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n")
            .expect_err("wrong accept");
        assert!(matches!(error, HandshakeError::Accept { .. }), "{error}");
    }
}

//! Request framing on a client connection's raw bytes, sans-io: finds the request heads
//! that carry both `Transfer-Encoding` and `Content-Length`.
//!
//! hyper accepts such a request (RFC 9112 §6.3 allows it: the chunked coding wins, the
//! connection closes afterwards) and drops `Content-Length` before the handler sees the
//! head, so the handler cannot tell it from a plain chunked request. Such a message is the
//! classic request-smuggling vector, and the gateway refuses it with `400` instead. This
//! tracker follows message boundaries the way hyper does (heads parsed with the same
//! `httparse`, bodies by `Content-Length` or chunked coding) and reports the index of the
//! first conflicting head. Anything it does not follow exactly as hyper does (a head hyper
//! rejects, `CONNECT`, a malformed chunk) makes it stop: from then on it reports nothing,
//! which is safe, because hyper itself still never forwards both headers and closes the
//! connection after such a request.

/// Longest request head followed, also given to hyper as its limit (which answers a longer
/// head with `431`), so both stop at the same point.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// hyper's default limit on header lines; more is a `431` there, and untracked here.
const MAX_HEADERS: usize = 100;

#[derive(Debug)]
pub struct Tracker {
    state: State,
    /// The head being read (only in [`State::Head`]).
    head: Vec<u8>,
    /// Heads completed so far.
    heads: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    /// Bytes of a `Content-Length` body still to come.
    Fixed(u64),
    Chunked(Chunk),
    /// Stopped following the stream.
    Lost,
}

/// Where in a chunked body (hyper's `ChunkedState`, and the same rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// The first digit of a size line.
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: the start of a trailer line or of the final CRLF.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            heads: 0,
        }
    }
}

impl Tracker {
    /// Follows `bytes`, the next ones read from the client. Returns the index (0 for the
    /// connection's first request) of a head completed in them that has both
    /// `Transfer-Encoding` and `Content-Length`; after one, the tracker stops.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            match self.state {
                State::Lost => return None,
                State::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(bytes);
                    match self.parse_head() {
                        Parsed::Partial => return None,
                        Parsed::Conflict => {
                            self.lose();
                            return Some(self.heads);
                        }
                        Parsed::Lost => {
                            self.lose();
                            return None;
                        }
                        Parsed::Complete { len, body } => {
                            bytes = &bytes[len - before..];
                            self.head.clear();
                            self.heads += 1;
                            self.state = body;
                        }
                    }
                }
                State::Fixed(left) => {
                    let take = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Fixed(left)
                    };
                }
                State::Chunked(Chunk::Data(left)) => {
                    let take = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                }
                State::Chunked(chunk) => {
                    self.state = step(chunk, bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
        None
    }

    fn lose(&mut self) {
        self.state = State::Lost;
        self.head = Vec::new();
    }

    fn parse_head(&mut self) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let len = match request.parse(&self.head) {
            // hyper answers a head longer than its limit with 431 however it arrived, so a
            // long head read at once stops the tracker as one read in pieces does.
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Partial) if self.head.len() <= MAX_HEAD_BYTES => {
                return Parsed::Partial
            }
            // Too long, or hyper answers it with 400/431 and closes.
            _ => return Parsed::Lost,
        };
        if request.method == Some("CONNECT") {
            return Parsed::Lost;
        }
        let named = |name: &'static str| {
            request
                .headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let has_te = named("transfer-encoding").next().is_some();
        let lengths: Vec<&[u8]> = named("content-length").collect();
        if has_te && !lengths.is_empty() {
            return Parsed::Conflict;
        }
        let body = if has_te {
            let last_coding = named("transfer-encoding")
                .next_back()
                .and_then(|v| v.rsplit(|&b| b == b',').next())
                .map(<[u8]>::trim_ascii);
            match (request.version, last_coding) {
                (Some(1), Some(coding)) if coding.eq_ignore_ascii_case(b"chunked") => {
                    State::Chunked(Chunk::Start)
                }
                // hyper: 400 (not chunked last, or HTTP/1.0).
                _ => return Parsed::Lost,
            }
        } else if let Some(first) = lengths.first() {
            match content_length(first) {
                // hyper: 400 for differing duplicates.
                Some(len) if lengths.iter().all(|l| content_length(l) == Some(len)) => {
                    if len == 0 {
                        State::Head
                    } else {
                        State::Fixed(len)
                    }
                }
                _ => return Parsed::Lost,
            }
        } else {
            State::Head
        };
        Parsed::Complete { len, body }
    }
}

enum Parsed {
    Partial,
    Complete {
        len: usize,
        body: State,
    },
    Conflict,
    /// Not followed exactly as hyper does: stop.
    Lost,
}

/// Digits only, as hyper reads a `Content-Length`.
fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// One byte of a chunked body outside chunk data (hyper's rules; anything hyper rejects
/// stops the tracker).
fn step(chunk: Chunk, byte: u8) -> State {
    let next = match (chunk, byte) {
        (Chunk::Start | Chunk::Size(_), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
            let size = match chunk {
                Chunk::Size(size) => size,
                _ => 0,
            };
            let digit = (byte as char).to_digit(16).map(u64::from);
            match size.checked_mul(16).zip(digit) {
                Some((shifted, digit)) => Chunk::Size(shifted + digit),
                None => return State::Lost,
            }
        }
        (Chunk::Size(size) | Chunk::SizeLws(size), b'\t' | b' ') => Chunk::SizeLws(size),
        (Chunk::Size(size) | Chunk::SizeLws(size), b';') => Chunk::Extension(size),
        (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Extension(size), b'\r') => {
            Chunk::SizeLf(size)
        }
        (Chunk::Extension(size), b) if b != b'\n' => Chunk::Extension(size),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => return State::Head,
        _ => return State::Lost,
    };
    State::Chunked(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFLICT: &[u8] =
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    /// Fed whole, then in pieces of every size from 1 to 7: the same answer.
    fn conflict_in(stream: &[u8]) -> Option<u64> {
        let whole = Tracker::default().feed(stream);
        for piece in 1..8 {
            let mut tracker = Tracker::default();
            let found = stream.chunks(piece).find_map(|chunk| tracker.feed(chunk));
            assert_eq!(found, whole, "fed in pieces of {piece}");
        }
        whole
    }

    #[test]
    fn both_headers_in_either_order_are_a_conflict() {
        assert_eq!(conflict_in(CONFLICT), Some(0));
        let te_first = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(conflict_in(te_first), Some(0));
    }

    #[test]
    fn the_conflicting_request_is_found_behind_pipelined_bodies() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // A body that looks like a conflicting head must not count.
        let body = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        stream.extend_from_slice(
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(body);
        // Chunked, with an extension, whitespace, the same lookalike inside and trailers.
        stream.extend_from_slice(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        stream.extend_from_slice(format!("{:X} ;ext=1\r\n", body.len()).as_bytes());
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n");
        assert_eq!(conflict_in(&stream), None);
        stream.extend_from_slice(CONFLICT);
        assert_eq!(conflict_in(&stream), Some(3));
    }

    #[test]
    fn what_hyper_rejects_or_cannot_be_followed_stops_the_tracker() {
        let stopped = [
            &b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ];
        for prefix in stopped {
            let mut stream = prefix.to_vec();
            stream.extend_from_slice(CONFLICT);
            assert_eq!(
                conflict_in(&stream),
                None,
                "{}",
                String::from_utf8_lossy(prefix)
            );
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'a');
        let mut tracker = Tracker::default();
        assert_eq!(tracker.feed(&long), None);
        assert_eq!(tracker.state, State::Lost);
        // Complete, but longer than hyper takes: stopped too, read at once or in pieces.
        long.extend_from_slice(b"\r\n\r\n");
        long.extend_from_slice(CONFLICT);
        assert_eq!(conflict_in(&long), None);
    }

    #[test]
    fn duplicate_equal_lengths_are_followed() {
        let mut stream =
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        stream.extend_from_slice(CONFLICT);
        assert_eq!(conflict_in(&stream), Some(1));
    }
}

//! Entry points for the fuzz targets of `fuzz/` (cargo-fuzz), compiled with the `fuzzing`
//! feature only (and in unit tests, so clippy and the tests see it): the parsers that read a
//! client's bytes are crate-private, and this re-exports them, or wraps them thinly, without
//! making them part of the library's API. Nothing of the daemon calls it.

use std::{
    pin::Pin,
    task::{Context, Poll, Waker},
};

use tokio::io::{AsyncRead, ReadBuf};

/// The smuggling tracker (`proxy/framing.rs`) and the head parser it follows, the same
/// `httparse` hyper uses, so a target compares with the very crate the tracker reads.
pub mod framing {
    pub use crate::proxy::framing::{Tracker, MAX_HEAD_BYTES};
    pub use httparse;
}

/// RFC 6455 upgrade rules (`proxy/upgrade.rs`).
pub mod upgrade {
    pub use crate::proxy::upgrade::{
        accept_key, check_switching_protocols, classify, BadSwitch, Classified, UpgradeError,
    };
}

/// The request's host (`route/host.rs`).
pub mod host {
    pub use crate::route::{parse_host, request_host, HostError, RequestHost};
}

/// The admin listener's checks of `Host`, `Origin` and the token (`admin/access.rs`).
pub mod admin {
    pub use crate::admin::access::{Access, Refused};
}

/// Reads `pieces` one after the other through the framing guard (`proxy/guard.rs`) as hyper
/// would, each read returning one piece; the index of the request the guard flagged as
/// having both `Transfer-Encoding` and `Content-Length`, if any.
pub fn guarded_conflict(pieces: &[&[u8]]) -> Option<u64> {
    let reader = Pieces {
        pieces: pieces.iter().map(|piece| piece.to_vec()).collect(),
        next: 0,
    };
    let (mut guarded, framing) = crate::proxy::guard::Guarded::new(reader);
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = vec![0; 64 * 1024];
    loop {
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut guarded).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
            _ => break,
        }
    }
    // A head takes more than one byte, so no index reaches the number of bytes.
    let total: usize = pieces.iter().map(|piece| piece.len()).sum();
    (0..=total as u64).find(|&index| framing.conflicted(index))
}

/// An in-memory socket whose every read returns one piece, whole when the buffer has room.
struct Pieces {
    pieces: Vec<Vec<u8>>,
    next: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Empty pieces would read as the end of the stream; skip them.
        while this.pieces.get(this.next).is_some_and(Vec::is_empty) {
            this.next += 1;
        }
        if let Some(piece) = this.pieces.get_mut(this.next) {
            let take = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..take]);
            piece.drain(..take);
            if piece.is_empty() {
                this.next += 1;
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_flags_what_the_tracker_finds_however_the_bytes_arrive() {
        let stream: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\n\
            Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(framing::Tracker::default().feed(stream), Some(1));
        assert_eq!(guarded_conflict(&[stream]), Some(1));
        let (a, b) = stream.split_at(30);
        assert_eq!(guarded_conflict(&[a, b"", b]), Some(1));
        assert_eq!(guarded_conflict(&[&stream[..20]]), None);
    }
}

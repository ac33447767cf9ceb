//! The smuggling tracker (`proxy/framing.rs`) and the guard that feeds it
//! (`proxy/guard.rs`) on arbitrary client bytes. Properties, beyond not panicking:
//! - the verdict does not depend on how the bytes are split into reads, nor on whether the
//!   tracker is fed directly or through the guard, as hyper reads;
//! - on the first request it agrees with `httparse` (the parser hyper uses): a head that
//!   is incomplete or that httparse rejects yields nothing; a complete one is flagged if
//!   and only if it carries both `Transfer-Encoding` and `Content-Length` (`CONNECT`, which
//!   hyper does not frame, aside).
#![no_main]

use gateway::fuzzing::{
    framing::{httparse, Tracker, MAX_HEAD_BYTES},
    guarded_conflict,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = Tracker::default().feed(stream);

    let pieces = split(stream, seed);
    let mut tracker = Tracker::default();
    let in_pieces = pieces.iter().find_map(|piece| tracker.feed(piece));
    assert_eq!(in_pieces, whole, "fed in pieces {pieces:?}");
    assert_eq!(guarded_conflict(&pieces), whole, "through the guard");

    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(stream) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => {
            let has = |name: &str| {
                request
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(name))
            };
            let both = has("transfer-encoding") && has("content-length");
            if request.method == Some("CONNECT") {
                assert_eq!(whole, None, "CONNECT is not followed");
            } else if both {
                assert_eq!(whole, Some(0), "both headers on the first request");
            } else {
                assert_ne!(whole, Some(0), "the first request has not both headers");
            }
        }
        // Too long for hyper, incomplete, or refused by httparse (and so by hyper): the
        // tracker stops, and the first request is never flagged.
        Ok(_) | Err(_) => assert_ne!(whole, Some(0), "no complete first head"),
    }
});

/// `stream` cut into reads of 1 to 16 bytes, sizes drawn from `seed`.
fn split(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift32: a fixed sequence per seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let take = (state % 16 + 1) as usize;
        let (piece, tail) = rest.split_at(take.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

//! The smuggling tracker (`proxy/framing.rs`) on well-formed pipelines: requests that
//! hyper accepts, with bodies by `Content-Length` or in chunks (sizes in either case with
//! leading zeros, extensions, whitespace, trailers), whose bodies may look like heads,
//! then optionally one request with both `Transfer-Encoding` and `Content-Length`, all
//! split into arbitrary reads. Property: the tracker follows every message boundary, so it
//! flags exactly that request's index, and nothing without it; the guard agrees.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use gateway::fuzzing::{framing::Tracker, guarded_conflict};
use libfuzzer_sys::fuzz_target;

/// One of them is hidden in every body, to tempt the tracker.
const LOOKALIKE: &[u8] =
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n";
const CONFLICT: &[u8] =
    b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

#[derive(Debug)]
struct Pipeline {
    stream: Vec<u8>,
    conflict: Option<u64>,
    cuts: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Pipeline {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut stream = Vec::new();
        let count = u.int_in_range(0..=6)?;
        for _ in 0..count {
            request(u, &mut stream)?;
        }
        let conflict = if u.arbitrary()? {
            stream.extend_from_slice(CONFLICT);
            Some(count)
        } else {
            None
        };
        Ok(Self {
            stream,
            conflict,
            cuts: u.arbitrary()?,
        })
    }
}

fn pick<'a, T>(u: &mut Unstructured<'_>, from: &'a [T]) -> Result<&'a T> {
    u.choose(from)
}

/// A token of 1 to 8 characters from `alphabet`.
fn token(u: &mut Unstructured<'_>, alphabet: &[u8]) -> Result<Vec<u8>> {
    let len = u.int_in_range(1..=8)?;
    (0..len).map(|_| pick(u, alphabet).copied()).collect()
}

const TCHAR: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~";
const VCHAR: &[u8] = b"abcXYZ019 \t!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn request(u: &mut Unstructured<'_>, out: &mut Vec<u8>) -> Result<()> {
    let method = *pick(
        u,
        &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"],
    )?;
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b" /");
    out.extend(token(u, b"abcxyz019-._~%/?=&")?);
    let chunked = u.arbitrary::<bool>()?;
    // HTTP/1.0 has no chunked coding (hyper refuses it).
    out.extend_from_slice(if !chunked && u.arbitrary()? {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    out.extend_from_slice(b"Host: a\r\n");
    for _ in 0..u.int_in_range(0..=3)? {
        out.extend_from_slice(b"X-");
        out.extend(token(u, TCHAR)?);
        out.extend_from_slice(if u.arbitrary()? { b": " } else { b":" });
        out.extend(
            token(u, VCHAR)?
                .into_iter()
                .skip_while(|b| *b == b' ' || *b == b'\t'),
        );
        out.extend_from_slice(b"\r\n");
    }
    let body = body(u)?;
    if chunked {
        let coding = *pick(u, &["chunked", "Chunked", "gzip, chunked", "gzip,chunked"])?;
        out.extend_from_slice(format!("Transfer-Encoding: {coding}\r\n\r\n").as_bytes());
        chunks(u, &body, out)?;
    } else if !body.is_empty() || u.arbitrary()? {
        let zeros = "0".repeat(u.int_in_range(0..=2)?);
        let line = format!("Content-Length: {zeros}{}\r\n", body.len());
        out.extend_from_slice(line.as_bytes());
        if u.arbitrary()? {
            // Equal duplicates are one length to hyper.
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Arbitrary bytes, sometimes with a conflicting head inside.
fn body(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut body: Vec<u8> = u.arbitrary()?;
    if u.arbitrary()? {
        let at = u.int_in_range(0..=body.len())?;
        body.splice(at..at, LOOKALIKE.iter().copied());
    }
    Ok(body)
}

fn chunks(u: &mut Unstructured<'_>, body: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut rest = body;
    while !rest.is_empty() {
        let take = u.int_in_range(1..=rest.len())?;
        let (data, tail) = rest.split_at(take);
        size_line(u, take, out)?;
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    size_line(u, 0, out)?;
    for _ in 0..u.int_in_range(0..=2)? {
        out.extend_from_slice(b"X-Trailer-");
        out.extend(token(u, TCHAR)?);
        out.extend_from_slice(b": ");
        out.extend(token(u, VCHAR)?);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `size` in hex (either case, leading zeros), optional whitespace and extensions, CRLF.
fn size_line(u: &mut Unstructured<'_>, size: usize, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice("0".repeat(u.int_in_range(0..=2)?).as_bytes());
    let hex = if u.arbitrary()? {
        format!("{size:x}")
    } else {
        format!("{size:X}")
    };
    out.extend_from_slice(hex.as_bytes());
    for _ in 0..u.int_in_range(0..=2)? {
        out.extend_from_slice(pick(u, &[&b""[..], b" ", b"\t", b" \t"])?);
        out.push(b';');
        out.extend(token(u, TCHAR)?);
        if u.arbitrary()? {
            out.push(b'=');
            out.extend(token(u, TCHAR)?);
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fuzz_target!(|pipeline: Pipeline| {
    let Pipeline {
        stream,
        conflict,
        cuts,
    } = pipeline;
    let mut pieces = Vec::new();
    let mut rest = &stream[..];
    for cut in cuts.iter().chain(std::iter::repeat(&u8::MAX)) {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(usize::from(*cut).clamp(1, rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    let mut tracker = Tracker::default();
    let found = pieces.iter().find_map(|piece| tracker.feed(piece));
    assert_eq!(
        found,
        conflict,
        "in {:?} read as {} pieces",
        String::from_utf8_lossy(&stream),
        pieces.len()
    );
    assert_eq!(guarded_conflict(&pieces), conflict, "through the guard");
});

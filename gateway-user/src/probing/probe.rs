//! One health probe: `GET path` on a fresh connection (TLS with SNI for https probes),
//! passed when the status is in a matching range and, when asked, the body contains the
//! matching text, all within the probe's timeout.

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::ProbeSpec;
use crate::{
    config::Protocol,
    health::{ProbeFailure, ProbeOutcome},
    upstream::connect,
};

/// Most body bytes read to look for `match_body`.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Sent with every probe, so backends can tell probes from clients in their logs.
pub const USER_AGENT: &str = concat!("gateway-health-probe/", env!("CARGO_PKG_VERSION"));

/// Runs one probe of `spec`.
pub async fn once(spec: &ProbeSpec) -> ProbeOutcome {
    let started = Instant::now();
    let result = tokio::time::timeout(spec.timeout, exchange(spec)).await;
    let latency = started.elapsed();
    let (status, failure) = match result {
        Err(_) => (None, Some(ProbeFailure::Timeout(spec.timeout))),
        Ok(Err(why)) => (None, Some(why)),
        Ok(Ok((status, body))) => {
            let failure = if !spec.status_matches(status) {
                Some(ProbeFailure::Status {
                    status: status.as_u16(),
                    expected: spec.ranges(),
                })
            } else {
                match (&spec.match_body, body) {
                    (Some(text), Some(body)) if !contains(&body, text.as_bytes()) => {
                        Some(ProbeFailure::BodyMismatch {
                            text: text.clone(),
                            read: body.len(),
                        })
                    }
                    (Some(_), None) => Some(ProbeFailure::BodyUnreadable),
                    _ => None,
                }
            };
            (Some(status.as_u16()), failure)
        }
    };
    ProbeOutcome {
        status,
        latency,
        failure,
    }
}

/// Connect, send, read the head (and the body when it is to be matched).
async fn exchange(spec: &ProbeSpec) -> Result<(StatusCode, Option<Bytes>), ProbeFailure> {
    if spec.protocol == Protocol::Https && spec.tls.is_none() {
        return Err(ProbeFailure::NoTlsClient);
    }
    let stream = connect::connect(spec.addr, spec.tls.clone())
        .await
        .map_err(|e| ProbeFailure::Connect(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProbeFailure::Http(e.to_string()))?;
    tokio::spawn(conn);
    let request = Request::get(spec.path.as_str())
        .header(header::HOST, spec.host.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeFailure::Request(e.to_string()))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| describe_exchange_error(&e))?;
    let status = resp.status();
    if spec.match_body.is_none() {
        return Ok((status, None));
    }
    // Up to the limit: a larger body is cut, the text must be in its first bytes.
    let mut body = resp.into_body();
    let mut read = Vec::new();
    while read.len() < MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(_)) if read.is_empty() => return Ok((status, None)),
            Some(Err(_)) | None => break,
        }
    }
    read.truncate(MAX_BODY_BYTES);
    Ok((status, Some(Bytes::from(read))))
}

fn describe_exchange_error(error: &hyper::Error) -> ProbeFailure {
    if error.is_incomplete_message() {
        ProbeFailure::Closed
    } else {
        ProbeFailure::Http(error.to_string())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_match_finds_text_anywhere() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: fine", b"ok"));
        assert!(contains(b"", b""));
    }
}

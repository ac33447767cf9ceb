//! Helpers the unit tests of several modules share.

use http::{header::HeaderName, HeaderMap, HeaderValue};

/// A header map of `(name, value)` pairs, in order (a name may repeat).
pub fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect()
}

//! Cookie affinity, Azure's `ApplicationGatewayAffinity`: the gateway names the backend it
//! chose in a cookie, and a request carrying that cookie goes back to the same backend
//! while it is still in the pool.
//!
//! The value is an opaque id, never the address: the first 16 bytes of
//! SHA-256(key ‖ pool ‖ 0 ‖ address), as 32 lowercase hex digits. The key is random per
//! process, so ids cannot be computed from addresses outside the gateway; a restart
//! re-balances pinned clients (each gets a fresh cookie on its next request).

use std::{fmt::Write as _, net::SocketAddr};

use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest as _, Sha256};

/// Secret key of the affinity ids; one per process, kept across configuration snapshots.
#[derive(Clone)]
pub struct AffinityKey([u8; 32]);

impl std::fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AffinityKey(..)")
    }
}

impl AffinityKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A fixed key, for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The cookie value naming `backend` of `pool`.
    pub fn id(&self, pool: &str, backend: SocketAddr) -> String {
        let mut hash = Sha256::new();
        hash.update(self.0);
        hash.update(pool.as_bytes());
        hash.update([0]);
        hash.update(backend.to_string().as_bytes());
        let digest = hash.finalize();
        let mut hex = String::with_capacity(32);
        for byte in &digest[..16] {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }
}

/// Values of the cookies called `name` in the request's `Cookie` headers, in order.
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"'))
        })
}

/// `Set-Cookie` for `id`: `Path=/; HttpOnly`, and `SameSite=None; Secure` when the
/// listener is https (so the cookie also comes back on cross-site requests, as Azure does).
pub fn set_cookie(name: &str, id: &str, https: bool) -> Option<HeaderValue> {
    let secure = if https { "; SameSite=None; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={id}; Path=/; HttpOnly{secure}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_opaque_stable_and_keyed() {
        let key = AffinityKey::from_bytes([7; 32]);
        let a: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:80".parse().expect("addr");
        let id = key.id("web", a);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!id.contains("10.0.0.1"));
        assert_eq!(id, key.id("web", a), "stable");
        assert_ne!(id, key.id("web", b), "per backend");
        assert_ne!(id, key.id("api", a), "per pool");
        assert_ne!(id, AffinityKey::from_bytes([8; 32]).id("web", a), "per key");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; Aff=x"));
        headers.append(header::COOKIE, HeaderValue::from_static("Aff=\"y\";b=2"));
        let found: Vec<&str> = cookie_values(&headers, "Aff").collect();
        assert_eq!(found, ["x", "y"]);
        assert_eq!(
            cookie_values(&headers, "aff").count(),
            0,
            "names are case-sensitive"
        );
    }

    #[test]
    fn set_cookie_attributes() {
        let plain = set_cookie("ApplicationGatewayAffinity", "ab", false).expect("valid");
        assert_eq!(plain, "ApplicationGatewayAffinity=ab; Path=/; HttpOnly");
        let tls = set_cookie("A", "ab", true).expect("valid");
        assert_eq!(tls, "A=ab; Path=/; HttpOnly; SameSite=None; Secure");
    }
}

//! Request paths in one normal form, so that path rules cannot be bypassed by spelling a
//! path another way (`/%61dmin`, `//admin`, `/x/../admin`, `/ADMIN`, `/admin;x`), and the
//! backend is sent the path the rules matched.
//!
//! The steps, in order, follow RFC 3986 §6.2.2 and what nginx and Envoy do
//! (`normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`):
//!
//! 1. **Percent-encoding.** A `%` must be followed by two hex digits (else
//!    [`PathError::BadPercent`]). Encoded unreserved characters (letters, digits, `-._~`)
//!    are decoded (`%61` → `a`, `%2e` → `.`); every other encoding is kept, with its hex
//!    digits in upper case. Encoded slashes (`%2F`, and `%5C`, a backslash some servers take
//!    for one) follow [`EscapedSlashes`]. A raw backslash is refused
//!    ([`PathError::Backslash`]): browsers turn it into `/` before sending, Windows servers
//!    read it as `/`, other servers as a character.
//! 2. **Dot segments** (`.`, `..`) are removed as RFC 3986 §5.2.4 says (`..` at the root
//!    stays at the root). A dot segment with parameters (`..;x`) is refused
//!    ([`PathError::DotParameters`]): Java servers read it as `..`.
//! 3. **Slashes.** With `merge_slashes` (nginx's default), empty segments are dropped
//!    (`//a///b` → `/a/b`).
//!
//! The result is what the backend is sent. Path rules compare against it without each
//! segment's parameters (`;` to the end of the segment, which Java servers strip, so
//! `/admin;x/secret` is matched as `/admin/secret`), with encoded printable characters
//! decoded but `/`, `\` and `%` (`/%40admin` is `/@admin` to a backend too), ignoring ASCII
//! case (Azure's path rules are case-insensitive): [`NormalPath::routed`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// What to do with `%2F` and `%5C` in a request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refuse the request (`400`). Envoy's advice when routing depends on the path: a
    /// backend that decodes them would see another path than the rules did.
    #[default]
    Reject,
    /// Leave them encoded; they do not separate segments (RFC 3986), for the rules or for a
    /// backend that reads the path the same way.
    Keep,
    /// Decode both to `/` before anything else, so rules and backend see separators.
    Decode,
}

/// How request paths are normalised (`[global]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathPolicy {
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Why a path has no safe normal form; the request gets `400` with these words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("the path has a '%' that is not followed by two hex digits")]
    BadPercent,
    #[error("the path holds an encoded slash (%2F or %5C)")]
    EscapedSlash,
    #[error("the path holds a backslash: write '/' or %5C")]
    Backslash,
    #[error("the path has a dot segment with parameters ('.;' or '..;')")]
    DotParameters,
}

impl PathError {
    /// One word, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "not_absolute",
            Self::BadPercent => "bad_percent",
            Self::EscapedSlash => "escaped_slash",
            Self::Backslash => "backslash",
            Self::DotParameters => "dot_parameters",
        }
    }
}

/// A path in normal form; borrowed when the request's was already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalPath<'a> {
    path: Cow<'a, str>,
    /// `path` without segment parameters, when it has any.
    routed: Option<String>,
}

impl<'a> NormalPath<'a> {
    /// What the backend is sent (and redirects carry).
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// What path rules compare against (ignoring ASCII case): the path without `;`
    /// parameters, encoded printable characters but `/`, `\` and `%` decoded.
    pub fn routed(&self) -> &str {
        self.routed.as_deref().unwrap_or(&self.path)
    }

    /// Whether normalising changed the path.
    pub fn changed(&self) -> bool {
        matches!(self.path, Cow::Owned(_))
    }

    pub fn into_path(self) -> Cow<'a, str> {
        self.path
    }
}

/// `path` (of a request target, without query) in normal form.
pub fn normalize(path: &str, policy: PathPolicy) -> Result<NormalPath<'_>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path, policy) {
        return Ok(NormalPath {
            path: Cow::Borrowed(path),
            routed: routed_view(path, policy),
        });
    }
    let decoded = decode(path, policy.escaped_slashes)?;
    let normal = join(remove_dots(&decoded, policy)?.into_iter());
    let routed = routed_view(&normal, policy);
    // The fast check is conservative (`%20` is already normal): borrow when nothing changed.
    let path = if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    };
    Ok(NormalPath { path, routed })
}

/// Whether no step would change `path`: the common case, checked without allocating.
fn is_normal(path: &str, policy: PathPolicy) -> bool {
    if path.bytes().any(|b| matches!(b, b'%' | b'\\')) {
        return false;
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, segment)| {
        let name = segment.split(';').next().unwrap_or_default();
        name != "." && name != ".." && !(policy.merge_slashes && segment.is_empty() && i < last)
    })
}

/// Step 1: percent-encodings decoded or canonicalised, backslashes refused.
fn decode(path: &str, escaped: EscapedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadPercent)?;
                let value = hex_value(hex[0])
                    .zip(hex_value(hex[1]))
                    .map(|(high, low)| high << 4 | low)
                    .ok_or(PathError::BadPercent)?;
                match value {
                    b'/' | b'\\' => match escaped {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Keep => push_encoded(&mut out, value),
                        EscapedSlashes::Decode => out.push('/'),
                    },
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => push_encoded(&mut out, v),
                }
                i += 3;
            }
            // The rest is printable ASCII (the caller refuses anything else) or, from a
            // configuration file, any UTF-8: copied as it is.
            _ => {
                let len = utf8_len(bytes[i]);
                out.push_str(&path[i..i + len]);
                i += len;
            }
        }
    }
    Ok(out)
}

/// Steps 2 and 3: the segments of the normal path (after its leading `/`).
fn remove_dots(path: &str, policy: PathPolicy) -> Result<Vec<&str>, PathError> {
    let input: Vec<&str> = path[1..].split('/').collect();
    let last = input.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(input.len());
    for (i, segment) in input.iter().enumerate() {
        let (name, has_parameters) = match segment.split_once(';') {
            Some((name, _)) => (name, true),
            None => (*segment, false),
        };
        let dot = name == ".";
        let dots = name == "..";
        if (dot || dots) && has_parameters {
            return Err(PathError::DotParameters);
        }
        if dots {
            out.pop();
        }
        if dot || dots {
            // `/a/b/..` is `/a/`: a dot segment at the end leaves the directory.
            if i == last {
                out.push("");
            }
            continue;
        }
        if policy.merge_slashes && segment.is_empty() && i < last {
            continue;
        }
        out.push(segment);
    }
    if policy.merge_slashes {
        // `/a/..//` leaves `["", ""]`: one trailing slash is enough.
        while out.len() > 1 && out[out.len() - 1].is_empty() && out[out.len() - 2].is_empty() {
            out.pop();
        }
    }
    Ok(out)
}

/// What path rules compare: `path` without each segment's `;` parameters (merged again: a
/// segment that was only parameters is empty), then with every encoded printable ASCII
/// character decoded but `/`, `\` and `%` (so `%40admin` is `@admin`, as a backend reads
/// it; bytes past ASCII stay encoded, in upper case). `None` when that is `path` itself.
fn routed_view(path: &str, policy: PathPolicy) -> Option<String> {
    if !path.contains([';', '%']) {
        return None;
    }
    let segments: Vec<&str> = path[1..]
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect();
    let last = segments.len() - 1;
    let kept = segments
        .iter()
        .enumerate()
        .filter(|&(i, s)| !(policy.merge_slashes && s.is_empty() && i < last))
        .map(|(_, s)| *s);
    let stripped = join(kept);
    let mut routed = String::with_capacity(stripped.len());
    let mut rest = stripped.as_str();
    while let Some(at) = rest.find('%') {
        routed.push_str(&rest[..at]);
        // A normal path's `%` is always followed by two upper-case hex digits.
        let decoded = rest
            .get(at + 1..at + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|&b| b.is_ascii_graphic() && !matches!(b, b'/' | b'\\' | b'%'));
        match decoded {
            Some(byte) => {
                routed.push(char::from(byte));
                rest = &rest[at + 3..];
            }
            None => {
                routed.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    routed.push_str(rest);
    (routed != path).then_some(routed)
}

fn join<'s>(segments: impl Iterator<Item = &'s str>) -> String {
    let mut path = String::new();
    let mut any = false;
    for segment in segments {
        path.push('/');
        path.push_str(segment);
        any = true;
    }
    if !any {
        path.push('/');
    }
    path
}

fn push_encoded(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;

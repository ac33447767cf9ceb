//! The small languages inside string values — object names, host names, URL paths, backend
//! addresses, status-code ranges — parsed without I/O, and the matchers built from them.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use crate::path::{self, PathPolicy};

/// Why a value does not parse, and how to write it instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub problem: String,
    pub fix: String,
}

fn invalid(problem: impl Into<String>, fix: impl Into<String>) -> Invalid {
    Invalid {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Azure's rule for resource names: 1–80 characters, letters, digits, `_`, `.` and `-`,
/// starting with a letter or digit and ending with a letter, digit or `_`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let fix = "use 1-80 letters, digits, '_', '.' or '-', starting with a letter or digit \
               and ending with a letter, digit or '_'";
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let first_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    let last_ok = name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if (1..=80).contains(&name.len()) && chars_ok && first_ok && last_ok {
        Ok(())
    } else {
        Err(invalid(format!("{name:?} is not a valid name"), fix))
    }
}

/// Which hosts a listener answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// No `host_names`: every host (the catch-all of its bind).
    Any,
    Names(Vec<HostPattern>),
}

impl HostMatch {
    /// Whether `host` (the `Host` header or SNI name, without port) is one of ours.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Names(patterns) => patterns.iter().any(|pattern| pattern.matches(host)),
        }
    }
}

/// `www.example.com`, or `*.example.com` (exactly one more label in front, like a
/// certificate's wildcard). Stored lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// The part after `*`, e.g. `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let lower = text.to_ascii_lowercase();
        if lower == "*" {
            return Err(invalid(
                "\"*\" alone is not a host name",
                "remove host_names to make this listener take every host",
            ));
        }
        if lower.contains(':') {
            return Err(invalid(
                format!("host name {text:?} has a port"),
                "write the name alone; the listener's bind sets the port",
            ));
        }
        if let Some(rest) = lower.strip_prefix("*.") {
            check_dns_name(rest, text)?;
            return Ok(Self::Wildcard(format!(".{rest}")));
        }
        check_dns_name(&lower, text)?;
        Ok(Self::Exact(lower))
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Wildcard(suffix) => {
                host.len() > suffix.len() && {
                    let (label, rest) = host.split_at(host.len() - suffix.len());
                    rest.eq_ignore_ascii_case(suffix) && !label.contains('.')
                }
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Letters, digits and `-` in dot-separated labels of 1–63 characters, 253 at most.
fn check_dns_name(name: &str, original: &str) -> Result<(), Invalid> {
    let fix = "write a DNS name such as www.example.com or *.example.com ('*' only as the \
               whole first label)";
    if name.ends_with('.') {
        return Err(invalid(
            format!("host name {original:?} ends with a dot"),
            "remove the trailing dot",
        ));
    }
    if name.contains('*') {
        return Err(invalid(
            format!("host name {original:?} has '*' other than as its whole first label"),
            fix,
        ));
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid(
            format!("{original:?} is not a valid host name"),
            fix,
        ));
    }
    Ok(())
}

/// A path of a path rule: `/ws` (that path exactly) or `/api/*` (everything under `/api/`;
/// `/*` is every path). Stored in ASCII lower case: path rules ignore case, as Azure's do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathPattern {
    Exact(String),
    /// What the path must start with, e.g. `/api/`.
    Prefix(String),
}

impl PathPattern {
    /// A path as written: absolute, without whitespace, query or fragment, `*` only as the
    /// whole last segment. (A probe's path is checked with this alone.)
    pub(crate) fn parse(text: &str) -> Result<Self, Invalid> {
        let fix = "write an absolute path such as \"/ws\", or a prefix ending in \"/*\" such \
                   as \"/api/*\"";
        if !text.starts_with('/') {
            return Err(invalid(
                format!("path {text:?} does not start with '/'"),
                fix,
            ));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
        {
            return Err(invalid(
                format!("path {text:?} has whitespace, '?' or '#'"),
                "match on the path alone, without spaces, query or fragment",
            ));
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None if !text.contains('*') => Ok(Self::Exact(text.to_owned())),
            _ => Err(invalid(
                format!("path {text:?} has '*' other than as its whole last segment"),
                fix,
            )),
        }
    }

    /// A path rule's pattern: [`Self::parse`], and written in the normal form requests are
    /// matched in (see [`crate::path`]), since a pattern in any other form could never
    /// match.
    pub fn parse_rule(text: &str, policy: PathPolicy) -> Result<Self, Invalid> {
        let pattern = Self::parse(text)?;
        let written = match &pattern {
            Self::Exact(path) | Self::Prefix(path) => path.as_str(),
        };
        let star = if matches!(pattern, Self::Prefix(_)) {
            "*"
        } else {
            ""
        };
        if !written.is_ascii() {
            return Err(invalid(
                format!("path {text:?} has characters past ASCII, which requests never send raw"),
                "percent-encode them in UTF-8, e.g. \"/caf%C3%A9/*\" for \"/café/*\"",
            ));
        }
        if written.contains(';') {
            return Err(invalid(
                format!("path {text:?} has ';' parameters, which path rules ignore"),
                "write the path without them (\"/a;x/b\" is matched as \"/a/b\")",
            ));
        }
        match path::normalize(written, policy) {
            Err(error) => Err(invalid(
                format!("path {text:?} can never match: {error}"),
                "write the path as requests are matched: '%' only in %XX, no '\\', and \
                 (unless path_escaped_slashes allows them) no %2F or %5C",
            )),
            Ok(normal) if !normal.as_str().eq_ignore_ascii_case(written) => Err(invalid(
                format!(
                    "path {text:?} is matched as {:?}",
                    format!("{}{star}", normal.as_str())
                ),
                format!(
                    "write {:?} (requests are matched with dot segments removed, \
                     unreserved characters decoded{})",
                    format!("{}{star}", normal.as_str()),
                    if policy.merge_slashes {
                        " and slashes merged"
                    } else {
                        ""
                    }
                ),
            )),
            // Compared as requests are: `%40` and `@` alike.
            Ok(normal) => Ok(match pattern {
                Self::Exact(_) => Self::Exact(normal.routed().to_ascii_lowercase()),
                Self::Prefix(_) => Self::Prefix(normal.routed().to_ascii_lowercase()),
            }),
        }
    }

    /// Whether a request's path matches: its [`path::NormalPath::routed`] form, ASCII case
    /// ignored.
    pub fn matches(&self, routed: &str) -> bool {
        match self {
            Self::Exact(exact) => routed.eq_ignore_ascii_case(exact),
            Self::Prefix(prefix) => routed
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes())),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => f.write_str(path),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// One entry of a backend pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    pub host: BackendHost,
    /// `None`: the port of the backend settings the pool is used with.
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendHost {
    Ip(IpAddr),
    /// A DNS name, resolved when the gateway starts.
    Name(String),
}

impl BackendAddress {
    /// `IP:PORT`, `IP`, `host:port` or `host` (IPv6 as `[::1]:80` or `::1`).
    pub(crate) fn parse(text: &str) -> Result<Self, Invalid> {
        let fix = "write IP:PORT, IP, host:port or host (e.g. \"10.0.0.4:8080\", \
                   \"[fd00::4]:8080\", \"app.internal\"); without a port the settings' port is used";
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Self::with_port(BackendHost::Ip(addr.ip()), addr.port(), text);
        }
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self {
                host: BackendHost::Ip(ip),
                port: None,
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| invalid(format!("{text:?} has no valid port after ':'"), fix))?;
                (host, Some(port))
            }
            None => (text, None),
        };
        let lower = host.to_ascii_lowercase();
        check_dns_name(&lower, text)
            .map_err(|_| invalid(format!("{text:?} is not a valid backend address"), fix))?;
        match port {
            Some(port) => Self::with_port(BackendHost::Name(lower), port, text),
            None => Ok(Self {
                host: BackendHost::Name(lower),
                port: None,
            }),
        }
    }

    fn with_port(host: BackendHost, port: u16, text: &str) -> Result<Self, Invalid> {
        if port == 0 {
            return Err(invalid(
                format!("{text:?} has port 0"),
                "give the port the backend listens on, or leave the port out to use the settings' port",
            ));
        }
        Ok(Self {
            host,
            port: Some(port),
        })
    }
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (BackendHost::Ip(IpAddr::V6(ip)), Some(port)) => write!(f, "[{ip}]:{port}"),
            (BackendHost::Ip(ip), Some(port)) => write!(f, "{ip}:{port}"),
            (BackendHost::Name(name), Some(port)) => write!(f, "{name}:{port}"),
            (BackendHost::Ip(ip), None) => write!(f, "{ip}"),
            (BackendHost::Name(name), None) => f.write_str(name),
        }
    }
}

/// `"200"` or `"200-399"`, codes 100–599: an inclusive range.
pub fn parse_status_range(text: &str) -> Result<(u16, u16), Invalid> {
    let fix = "write a status code such as \"200\" or a range such as \"200-399\" (codes 100-599)";
    let code = |part: &str| {
        part.trim()
            .parse::<u16>()
            .ok()
            .filter(|code| (100..=599).contains(code))
    };
    let range = match text.split_once('-') {
        Some((low, high)) => code(low).zip(code(high)),
        None => code(text).map(|c| (c, c)),
    };
    match range {
        Some((low, high)) if low <= high => Ok((low, high)),
        _ => Err(invalid(
            format!("{text:?} is not a status code or range"),
            fix,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let wild = HostPattern::parse("*.Example.com").expect("wildcard");
        assert!(wild.matches("www.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("a.b.example.com"));
        assert!(HostPattern::parse("www.example.com")
            .expect("exact")
            .matches("WWW.example.com."));
        for bad in [
            "*",
            "w*.example.com",
            "a..b",
            "-a.com",
            "a.com.",
            "a.com:80",
            "",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_patterns() {
        assert_eq!(
            PathPattern::parse_rule("/API/*", PathPolicy::default()),
            Ok(PathPattern::Prefix("/api/".into()))
        );
        assert!(PathPattern::parse("/*").expect("all").matches("/x/y"));
        assert!(PathPattern::parse("/ws").expect("exact").matches("/ws"));
        assert!(!PathPattern::parse("/ws").expect("exact").matches("/ws/x"));
        assert!(PathPattern::parse("/api/*")
            .expect("prefix")
            .matches("/api/x"));
        for bad in ["api", "/a*", "/*/x", "/a/**", "/a b", "/a?b=1"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?}");
        }
        let rule = |text| PathPattern::parse_rule(text, PathPolicy::default());
        assert!(rule("/Admin/*").expect("prefix").matches("/aDMIN/x"));
        assert!(rule("/caf%c3%a9").expect("exact").matches("/CAF%C3%A9"));
        // Encoded and raw printable characters alike, both ways.
        assert!(rule("/@admin/*").expect("prefix").matches("/@admin/x"));
        assert_eq!(rule("/%40admin/*"), rule("/@admin/*"));
        assert!(rule("/a%2Bb/*").expect("prefix").matches("/a+b/"));
        for (bad, words) in [
            ("/%61dmin/*", "is matched as \"/admin/*\""),
            ("//admin/*", "is matched as \"/admin/*\""),
            ("/x/../admin", "is matched as \"/admin\""),
            ("/admin;x/*", "';' parameters"),
            ("/café/*", "past ASCII"),
            ("/a%2fb", "can never match"),
            ("/a\\b", "can never match"),
        ] {
            let problem = rule(bad).expect_err(bad).problem;
            assert!(problem.contains(words), "{bad:?}: {problem}");
        }
        let keep = PathPolicy {
            merge_slashes: false,
            escaped_slashes: path::EscapedSlashes::Keep,
        };
        assert!(PathPattern::parse_rule("//a%2Fb/*", keep).is_ok());
    }

    #[test]
    fn backend_addresses() {
        let parse = |text: &str| BackendAddress::parse(text).map(|a| a.to_string());
        assert_eq!(parse("10.0.0.1:80"), Ok("10.0.0.1:80".into()));
        assert_eq!(parse("[::1]:80"), Ok("[::1]:80".into()));
        assert_eq!(parse("::1"), Ok("::1".into()));
        assert_eq!(parse("10.0.0.1"), Ok("10.0.0.1".into()));
        assert_eq!(parse("App.internal:8080"), Ok("app.internal:8080".into()));
        assert_eq!(parse("app"), Ok("app".into()));
        for bad in ["10.0.0.1:0", "app:http", "a b", "", "http://x"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_ranges_and_names() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("204"), Ok((204, 204)));
        for bad in ["399-200", "2xx", "99", "200-700", ""] {
            assert!(parse_status_range(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("web-1.a_").is_ok());
        for bad in ["", "-a", "a-", "a b", &"a".repeat(81)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! `[global]`.

use std::{net::SocketAddr, time::Duration};

use super::Checker;
use crate::{
    defaults,
    document::{Element, Origin},
    matching::Invalid,
    model::{DataplaneMode, Global},
    path::PathPolicy,
    raw::RawGlobal,
    AdminToken,
};

/// The global settings with defaults applied (all defaults without a `[global]` table, or
/// when it failed to read: that is reported already).
pub fn check(element: Option<&Element<RawGlobal>>, c: &mut Checker<'_>) -> Global {
    let raw = element.and_then(|e| e.raw.clone()).unwrap_or_default();
    let origin = element.map(|e| e.origin.clone());
    let limits = check_limits(&raw, origin.as_ref(), c);
    let admin = match (&raw.admin, &origin) {
        (Some(text), Some(origin)) => parse_admin(text, origin, c),
        _ => None,
    };
    let log_level = raw
        .log_level
        .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
    if let Some(origin) = &origin {
        if let Err(error) = check_log_level(&log_level) {
            c.error(origin, "log_level", error, LOG_LEVEL_FIX);
        }
    }
    let handshake_secs = raw
        .handshake_timeout_secs
        .unwrap_or(defaults::HANDSHAKE_TIMEOUT_SECS);
    let handshake_timeout = match &origin {
        Some(origin) => c.positive_secs(
            origin,
            "handshake_timeout_secs",
            Some(handshake_secs),
            defaults::HANDSHAKE_TIMEOUT_SECS,
        ),
        None => Duration::from_secs(handshake_secs),
    };
    Global {
        dataplane: raw.dataplane.unwrap_or(DataplaneMode::Auto),
        admin,
        log_level,
        log_format: raw.log_format.unwrap_or_default(),
        shutdown_drain: Duration::from_secs(
            raw.shutdown_drain_secs
                .unwrap_or(defaults::SHUTDOWN_DRAIN_SECS),
        ),
        handshake_timeout,
        tunnel_sndbuf_bytes: raw
            .tunnel_sndbuf_bytes
            .unwrap_or(defaults::TUNNEL_SNDBUF_BYTES),
        spliced_backlog_pool_bytes: raw
            .spliced_backlog_pool_bytes
            .unwrap_or(defaults::SPLICED_BACKLOG_POOL_BYTES),
        default_probes: raw.default_probes.unwrap_or(defaults::DEFAULT_PROBES),
        paths: PathPolicy {
            merge_slashes: raw.merge_slashes.unwrap_or(defaults::MERGE_SLASHES),
            escaped_slashes: raw.path_escaped_slashes.unwrap_or_default(),
        },
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        upgrades_per_ip_per_sec: limits.upgrades_per_ip_per_sec,
        upgrade_burst_per_ip: limits.upgrade_burst_per_ip,
        listen_backlog: limits.listen_backlog,
        response_send_timeout: secs(
            origin.as_ref(),
            "response_send_timeout_secs",
            raw.response_send_timeout_secs,
            defaults::RESPONSE_SEND_TIMEOUT_SECS,
            c,
        ),
        request_body_timeout: secs(
            origin.as_ref(),
            "request_body_timeout_secs",
            raw.request_body_timeout_secs,
            defaults::REQUEST_BODY_TIMEOUT_SECS,
            c,
        ),
        request_buffer_bytes: request_buffer_bytes(origin.as_ref(), raw.request_buffer_bytes, c),
        admin_host_names: match &origin {
            Some(origin) => admin_host_names(raw.admin_host_names.as_deref(), origin, c),
            None => Vec::new(),
        },
        admin_token: match (&raw.admin_token_file, &origin) {
            (Some(path), Some(origin)) => {
                let resolved = crate::pem::resolve(c.base_dir(), path);
                match AdminToken::read(&resolved) {
                    Ok(token) => Some(token),
                    Err(invalid) => {
                        c.invalid(origin, "admin_token_file", invalid);
                        None
                    }
                }
            }
            _ => None,
        },
    }
}

/// `admin_host_names`, each checked by [`admin_host_name`].
fn admin_host_names(names: Option<&[String]>, origin: &Origin, c: &mut Checker<'_>) -> Vec<String> {
    let mut valid = Vec::new();
    for (i, text) in names.unwrap_or_default().iter().enumerate() {
        match admin_host_name(text) {
            Ok(name) => valid.push(name),
            Err(problem) => c.error(
                origin,
                &format!("admin_host_names[{i}]"),
                problem,
                "write a host name (\"gateway-admin.internal\") or an IP address, without port \
                 or wildcard",
            ),
        }
    }
    valid
}

/// One name the admin listener answers to (`Host` and `Origin`): a DNS name or an IP
/// address, no port, no wildcard; lowercase, without a trailing dot.
pub fn admin_host_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(name);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err(format!(
            "admin_host_names entry {text:?} is not a host name or an IP address"
        ))
    }
}

/// The connection limits and the backlog of `[global]`, with defaults applied.
struct Limits {
    max_connections: Option<u64>,
    max_connections_per_ip: u64,
    upgrades_per_ip_per_sec: u32,
    upgrade_burst_per_ip: u32,
    listen_backlog: Option<u32>,
}

fn check_limits(raw: &RawGlobal, origin: Option<&Origin>, c: &mut Checker<'_>) -> Limits {
    let limits = Limits {
        max_connections: raw.max_connections,
        max_connections_per_ip: raw
            .max_connections_per_ip
            .unwrap_or(defaults::MAX_CONNECTIONS_PER_IP),
        upgrades_per_ip_per_sec: raw
            .upgrades_per_ip_per_sec
            .unwrap_or(defaults::UPGRADES_PER_IP_PER_SEC),
        upgrade_burst_per_ip: raw
            .upgrade_burst_per_ip
            .unwrap_or(defaults::UPGRADE_BURST_PER_IP),
        listen_backlog: raw.listen_backlog,
    };
    if let Some(origin) = origin {
        for (key, problem) in limit_problems(
            raw.max_connections,
            raw.upgrade_burst_per_ip,
            raw.listen_backlog,
        ) {
            c.invalid(origin, key, problem);
        }
    }
    limits
}

/// What is wrong with the limits that have no "off" value: `(key, problem)`; shared by the
/// file's keys and their flags.
pub fn limit_problems(
    max_connections: Option<u64>,
    upgrade_burst_per_ip: Option<u32>,
    listen_backlog: Option<u32>,
) -> Vec<(&'static str, Invalid)> {
    let mut problems = Vec::new();
    if max_connections == Some(0) {
        problems.push((
            "max_connections",
            Invalid {
                problem: "max_connections is 0, which would refuse every client".into(),
                fix: "give at least 1, or remove the key for the default derived from                       RLIMIT_NOFILE ((the descriptor limit - 128) / 2)"
                    .into(),
            },
        ));
    }
    if upgrade_burst_per_ip == Some(0) {
        problems.push((
            "upgrade_burst_per_ip",
            Invalid {
                problem: "upgrade_burst_per_ip is 0, which would refuse every upgrade".into(),
                fix: format!(
                    "give at least 1 (the default is {}); upgrades_per_ip_per_sec = 0 turns                      the upgrade rate limit off",
                    defaults::UPGRADE_BURST_PER_IP
                ),
            },
        ));
    }
    match listen_backlog {
        Some(0) => problems.push((
            "listen_backlog",
            Invalid {
                problem: "listen_backlog is 0".into(),
                fix: "give at least 1, or remove the key for the kernel's net.core.somaxconn"
                    .into(),
            },
        )),
        Some(n) if n > defaults::LISTEN_BACKLOG_MAX => problems.push((
            "listen_backlog",
            Invalid {
                problem: format!("listen_backlog {n} is more than listen(2) takes"),
                fix: format!(
                    "give at most {} (the kernel caps it at net.core.somaxconn anyway)",
                    defaults::LISTEN_BACKLOG_MAX
                ),
            },
        )),
        _ => {}
    }
    problems
}

/// A timeout of at least 1 s (checked only when there is a `[global]` table to blame).
fn secs(
    origin: Option<&Origin>,
    field: &str,
    value: Option<u64>,
    default: u64,
    c: &mut Checker<'_>,
) -> Duration {
    match origin {
        Some(origin) => c.positive_secs(origin, field, value, default),
        None => Duration::from_secs(value.unwrap_or(default)),
    }
}

fn request_buffer_bytes(origin: Option<&Origin>, value: Option<u64>, c: &mut Checker<'_>) -> u64 {
    let bytes = value.unwrap_or(defaults::REQUEST_BUFFER_BYTES);
    if let (Err(problem), Some(origin)) = (check_request_buffer_bytes(bytes), origin) {
        c.error(origin, "request_buffer_bytes", problem, REQUEST_BUFFER_FIX);
    }
    bytes
}

pub const REQUEST_BUFFER_FIX: &str =
    "give at most 67108864 (64 MiB; the default is 65536), or 0 to \
     stream request bodies to the backend as they come";

/// Whether `bytes` can be held in memory per connection.
pub fn check_request_buffer_bytes(bytes: u64) -> Result<(), String> {
    if bytes > defaults::REQUEST_BUFFER_BYTES_MAX {
        return Err(format!(
            "request_buffer_bytes is {bytes}: every connection may hold that much in memory \
             (nothing is spooled to disk)"
        ));
    }
    Ok(())
}

pub const LOG_LEVEL_FIX: &str =
    "use a tracing filter such as \"info\", \"warn\" or \"info,gateway=debug\"";

/// Whether `level` is a valid `tracing` EnvFilter; the parser's message if not.
pub fn check_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|error| format!("log_level {level:?} is not a valid filter: {error}"))
}

fn parse_admin(text: &str, origin: &Origin, c: &mut Checker<'_>) -> Option<SocketAddr> {
    match admin_addr(text) {
        Ok(addr) => Some(addr),
        Err(problem) => {
            c.error(
                origin,
                "admin",
                problem,
                "write a port (\"9090\", on loopback) or IP:PORT (\"127.0.0.1:9090\"; keep it \
                 on loopback), or remove the key to run no admin listener",
            );
            None
        }
    }
}

/// The admin listener's address: `PORT` alone binds loopback (`127.0.0.1:PORT`), as the
/// admin API can reload the configuration; `IP:PORT` binds where it says.
pub fn admin_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("admin {text:?} is neither a port nor an IP:PORT address"))
}

#[cfg(test)]
mod tests {
    use super::{admin_addr, admin_host_name};

    #[test]
    fn admin_host_names_are_names_or_addresses() {
        assert_eq!(
            admin_host_name("Admin.Example.com.").as_deref(),
            Ok("admin.example.com")
        );
        assert_eq!(admin_host_name("10.0.0.1").as_deref(), Ok("10.0.0.1"));
        assert_eq!(admin_host_name("::1").as_deref(), Ok("::1"));
        for bad in [
            "",
            ".",
            "a..b",
            "*.example.com",
            "a:9090",
            "[::1]",
            "a b",
            "a_b",
        ] {
            assert!(admin_host_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_admin_port_is_on_loopback() {
        assert_eq!(
            admin_addr("9090").expect("valid").to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(
            admin_addr("[::1]:9090").expect("valid").to_string(),
            "[::1]:9090"
        );
        assert_eq!(
            admin_addr("0.0.0.0:1").expect("valid").to_string(),
            "0.0.0.0:1"
        );
        assert!(admin_addr("localhost:9090").is_err());
        assert!(admin_addr("99999").is_err());
    }
}

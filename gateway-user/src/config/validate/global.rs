//! `[global]`.

use std::{net::SocketAddr, time::Duration};

use super::Checker;
use crate::{
    config::{
        defaults,
        document::{Element, Origin},
        model::Global,
        raw::RawGlobal,
    },
    dataplane::DataplaneMode,
};

/// The global settings with defaults applied (all defaults without a `[global]` table, or
/// when it failed to read: that is reported already).
pub fn check(element: Option<&Element<RawGlobal>>, c: &mut Checker<'_>) -> Global {
    let raw = element.and_then(|e| e.raw.clone()).unwrap_or_default();
    let origin = element.map(|e| e.origin.clone());
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
    }
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
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            c.error(
                origin,
                "admin",
                format!("admin {text:?} is not an IP:PORT address"),
                "write e.g. \"127.0.0.1:9090\" (keep it on loopback), or remove the key to \
                 serve no metrics",
            );
            None
        }
    }
}

//! The `[global]` keys a reload cannot apply, sans-io: each one a new configuration
//! changes gets a warning, and the gateway goes on with the value it started with.

use std::net::SocketAddr;

use crate::config::Global;

/// The `[global]` keys that only apply at start, which `new` changes from `started`: one
/// warning each.
pub fn needs_restart(started: &Global, new: &Global) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |key: &str, old: String, new: String| {
        if old != new {
            changed.push(format!(
                "global.{key} changed ({old} -> {new}) but needs a restart; still running with {old}"
            ));
        }
    };
    let lower = |value: &dyn std::fmt::Debug| format!("{value:?}").to_lowercase();
    check(
        "dataplane",
        lower(&started.dataplane),
        lower(&new.dataplane),
    );
    let admin =
        |addr: Option<SocketAddr>| addr.map_or_else(|| "none".to_owned(), |a| a.to_string());
    check("admin", admin(started.admin), admin(new.admin));
    check(
        "log_level",
        started.log_level.clone(),
        new.log_level.clone(),
    );
    check(
        "log_format",
        lower(&started.log_format),
        lower(&new.log_format),
    );
    check(
        "default_probes",
        started.default_probes.to_string(),
        new.default_probes.to_string(),
    );
    changed
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config;

    fn started() -> Global {
        let toml = "[global]\nadmin = \"127.0.0.1:9090\"\n\
            [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
            [[backend_pools]]\nname = \"p\"\naddresses = [\"10.0.0.1\"]\n\
            [[backend_settings]]\nname = \"s\"\nport = 80\nprotocol = \"http\"\n\
            [[rules]]\nname = \"r\"\nkind = \"basic\"\nlistener = \"web\"\n\
            backend_pool = \"p\"\nbackend_settings = \"s\"\n";
        config::from_toml(toml, "t.toml", std::path::Path::new("."))
            .expect("valid")
            .global
    }

    #[test]
    fn keys_that_need_a_restart_are_named() {
        let started = started();
        assert_eq!(started.dataplane, crate::config::DataplaneMode::Auto);
        assert_eq!(started.log_level, "info");
        // Applied live: no warning.
        let live = Global {
            shutdown_drain: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            tunnel_sndbuf_bytes: 1 << 20,
            response_send_timeout: Duration::from_secs(5),
            request_body_timeout: Duration::from_secs(5),
            request_buffer_bytes: 0,
            ..started.clone()
        };
        assert!(needs_restart(&started, &live).is_empty());
        let restart = Global {
            dataplane: crate::config::DataplaneMode::Userspace,
            admin: None,
            log_level: "debug".to_owned(),
            ..started.clone()
        };
        assert_eq!(
            needs_restart(&started, &restart),
            [
                "global.dataplane changed (auto -> userspace) but needs a restart; still running \
                 with auto",
                "global.admin changed (127.0.0.1:9090 -> none) but needs a restart; still \
                 running with 127.0.0.1:9090",
                "global.log_level changed (info -> debug) but needs a restart; still running \
                 with info",
            ]
        );
    }
}

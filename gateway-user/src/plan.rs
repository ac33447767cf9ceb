//! What the current data path serves of a [`Config`]: per bind, every request and tunnel to
//! one pool (round-robin) under one backend settings' tunnel limits. What it cannot serve
//! yet (HTTPS listeners, host-name and path routing, redirects, HTTPS backends, affinity,
//! Host rewriting) is refused, one [`NotServed`] per object, rather than served wrongly;
//! `gateway check` accepts those configurations all the same.

use std::{fmt, net::SocketAddr, time::Duration};

use crate::config::{
    defaults, BackendAddress, BackendSettings, Config, HostHeader, HostMatch, Protocol, RuleAction,
    TunnelLimits,
};

/// One object the data path does not serve yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct NotServed {
    /// By name, e.g. `listeners.web`.
    pub key: String,
    pub problem: String,
}

/// Every object `run` refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Unsupported(pub Vec<NotServed>);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// What one bind serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindPlan {
    pub addr: SocketAddr,
    /// The listener (there is one per bind while host names are not routed).
    pub listener: String,
    pub pool: String,
    /// With the settings' port filled in where the pool left it out.
    pub backends: Vec<BackendAddress>,
    pub tunnel: TunnelLimits,
}

/// The binds to serve and what to warn about, or everything that cannot be served yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub binds: Vec<BindPlan>,
    /// Accepted but not applied yet (e.g. probes); logged at start-up.
    pub warnings: Vec<String>,
}

pub fn plan(config: &Config) -> Result<Plan, Unsupported> {
    let mut refused = Vec::new();
    let mut refuse = |key: String, problem: &str| {
        refused.push(NotServed {
            key,
            problem: problem.to_owned(),
        });
    };
    let mut binds = Vec::new();
    for bind in &config.binds {
        for site in &bind.sites {
            let key = format!("listeners.{}", site.listener);
            if bind.protocol == Protocol::Https {
                refuse(key.clone(), "https listeners are not served yet");
            }
            if site.hosts != HostMatch::Any {
                refuse(
                    key,
                    "host_names (multi-site listeners) are not routed yet; this listener \
                     would take every host",
                );
            }
            let rule_key = format!("rules.{}", site.rule.name);
            match &site.rule.action {
                RuleAction::PathBased { .. } => {
                    refuse(rule_key, "path_based rules are not served yet");
                }
                RuleAction::Redirect(_) => refuse(rule_key, "redirect rules are not served yet"),
                RuleAction::Basic(forward) => binds.push(BindPlan {
                    addr: bind.addr,
                    listener: site.listener.clone(),
                    pool: forward.pool.name.clone(),
                    backends: forward
                        .pool
                        .addresses
                        .iter()
                        .map(|a| BackendAddress {
                            host: a.host.clone(),
                            port: Some(a.port.unwrap_or(forward.settings.port)),
                        })
                        .collect(),
                    tunnel: forward.settings.tunnel,
                }),
            }
        }
    }
    let mut warnings = Vec::new();
    for settings in &config.backend_settings {
        check_settings(settings, &mut refuse, &mut warnings);
    }
    if !config.probes.is_empty() {
        warnings
            .push("probes are read but not run yet: every backend counts as healthy".to_owned());
    }
    if refused.is_empty() {
        return Ok(Plan { binds, warnings });
    }
    // One line per object.
    let mut merged: Vec<NotServed> = Vec::new();
    for item in refused {
        match merged.iter_mut().find(|m| m.key == item.key) {
            Some(m) => {
                m.problem.push_str("; ");
                m.problem.push_str(&item.problem);
            }
            None => merged.push(item),
        }
    }
    Err(Unsupported(merged))
}

fn check_settings(
    settings: &BackendSettings,
    refuse: &mut impl FnMut(String, &str),
    warnings: &mut Vec<String>,
) {
    let key = format!("backend_settings.{}", settings.name);
    if settings.protocol == Protocol::Https {
        refuse(key.clone(), "https backends are not served yet");
    }
    if settings.affinity_cookie.is_some() {
        refuse(key.clone(), "cookie_affinity is not served yet");
    }
    if settings.host_header != HostHeader::Preserve {
        refuse(
            key.clone(),
            "host_header and pick_host_name_from_backend_address are not applied yet",
        );
    }
    if settings.draining_timeout.is_some() {
        warnings.push(format!(
            "{key}: connection_draining is not applied yet (backends are never removed \
             while running)"
        ));
    }
    if settings.request_timeout != Duration::from_secs(defaults::REQUEST_TIMEOUT_SECS) {
        warnings.push(format!(
            "{key}: request_timeout_secs is not applied yet; handshake_timeout_secs bounds \
             the wait for a backend's answer"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, Sources};

    #[test]
    fn the_shortcut_serves_each_listen_address_with_the_pool() {
        let sources = Sources {
            listen: vec!["127.0.0.1:0".parse().expect("addr")],
            backends: vec!["127.0.0.1:3000".parse().expect("addr")],
            ..Sources::default()
        };
        let config = config::load(&sources).expect("valid");
        let plan = plan(&config).expect("served");
        assert_eq!(plan.binds.len(), 1);
        assert_eq!(plan.binds[0].backends[0].to_string(), "127.0.0.1:3000");
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn pool_addresses_without_a_port_take_the_settings_port() {
        let text = "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
            [[backend_pools]]\nname = \"p\"\naddresses = [\"10.0.0.1\", \"10.0.0.2:81\"]\n\
            [[backend_settings]]\nname = \"s\"\nport = 8080\nprotocol = \"http\"\n\
            [[rules]]\nname = \"r\"\nkind = \"basic\"\nlistener = \"l\"\n\
            backend_pool = \"p\"\nbackend_settings = \"s\"\n";
        let config = config::from_toml(text, "t.toml", Path::new(".")).expect("valid");
        let plan = plan(&config).expect("served");
        let backends: Vec<String> = plan.binds[0]
            .backends
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(backends, ["10.0.0.1:8080", "10.0.0.2:81"]);
    }

    #[test]
    fn what_is_not_served_yet_is_refused_once_per_object() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway.toml");
        let config = config::load(&Sources::file(example)).expect("the example is valid");
        let refused = plan(&config)
            .expect_err("https, routing and redirects are refused")
            .0;
        let keys: Vec<&str> = refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rules.http-to-https",
                "listeners.www",
                "rules.www-routes",
                "listeners.shop",
                "backend_settings.web-settings",
                "backend_settings.api-settings",
            ]
        );
        assert_eq!(
            refused[1].to_string(),
            "listeners.www: https listeners are not served yet; host_names (multi-site \
             listeners) are not routed yet; this listener would take every host"
        );
    }
}

//! What the current data path serves of a [`Config`]: everything `gateway check` accepts
//! (http and https listeners, multi-site by `host_names` with certificates by SNI; basic,
//! path-based and redirect rules; http and https backends with round-robin or cookie
//! affinity and any Host rule). What is accepted but not applied yet (probes, connection
//! draining) is a warning, logged at start-up and printed by `gateway check`.

use crate::config::{BackendSettings, Config};

/// What to warn about when the configuration is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Accepted but not applied yet (e.g. probes); logged at start-up.
    pub warnings: Vec<String>,
}

pub fn plan(config: &Config) -> Plan {
    let mut warnings = Vec::new();
    for settings in &config.backend_settings {
        check_settings(settings, &mut warnings);
    }
    if !config.probes.is_empty() {
        warnings
            .push("probes are read but not run yet: every backend counts as healthy".to_owned());
    }
    Plan { warnings }
}

fn check_settings(settings: &BackendSettings, warnings: &mut Vec<String>) {
    let key = format!("backend_settings.{}", settings.name);
    if settings.draining_timeout.is_some() {
        warnings.push(format!(
            "{key}: connection_draining is not applied yet (backends are never removed \
             while running)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, Protocol, Sources};

    #[test]
    fn the_shortcut_is_served_without_warnings() {
        let sources = Sources {
            listen: vec!["127.0.0.1:0".parse().expect("addr")],
            backends: vec!["127.0.0.1:3000".parse().expect("addr")],
            ..Sources::default()
        };
        let config = config::load(&sources).expect("valid");
        let plan = plan(&config);
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn routing_affinity_and_host_rules_are_served() {
        let text = "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
            host_names = [\"a.example.com\"]\n\
            [[backend_pools]]\nname = \"p\"\naddresses = [\"10.0.0.1\"]\n\
            [[backend_settings]]\nname = \"s\"\nport = 8080\nprotocol = \"http\"\n\
            cookie_affinity = true\nhost_header = \"internal\"\nrequest_timeout_secs = 5\n\
            connection_draining = true\n\
            [[rules]]\nname = \"r\"\nkind = \"path_based\"\nlistener = \"l\"\n\
            default_redirect = { target_url = \"https://example.com/\" }\n\
            [[rules.path_rules]]\nname = \"api\"\npaths = [\"/api/*\"]\n\
            backend_pool = \"p\"\nbackend_settings = \"s\"\n";
        let config = config::from_toml(text, "t.toml", Path::new(".")).expect("valid");
        let plan = plan(&config);
        assert_eq!(
            plan.warnings,
            [
                "backend_settings.s: connection_draining is not applied yet (backends are never \
              removed while running)"
            ]
        );
    }

    #[test]
    fn https_listeners_and_backends_are_served() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway.toml");
        let config = config::load(&Sources::file(example)).expect("the example is valid");
        assert!(config.binds.iter().any(|b| b.protocol == Protocol::Https));
        assert!(config
            .backend_settings
            .iter()
            .any(|s| s.protocol == Protocol::Https));
        let plan = plan(&config);
        assert!(
            plan.warnings.iter().all(|w| !w.contains("https")),
            "{:?}",
            plan.warnings
        );
    }
}

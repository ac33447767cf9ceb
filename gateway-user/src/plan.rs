//! What the current data path serves of a [`Config`]: http and https listeners (multi-site
//! by `host_names`, certificates by SNI) with basic, path-based and redirect rules, to http
//! and https backends with round-robin or cookie affinity and any Host rule. What it could
//! not serve would be refused, one [`NotServed`] per object, rather than served wrongly
//! (`gateway check` accepts such configurations all the same); today nothing is, and what
//! is accepted but not applied yet (probes, connection draining) is a warning.

use std::fmt;

use crate::config::{BackendSettings, Config};

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

/// What to warn about when the configuration is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Accepted but not applied yet (e.g. probes); logged at start-up.
    pub warnings: Vec<String>,
}

pub fn plan(config: &Config) -> Result<Plan, Unsupported> {
    // What a limit of the data path would refuse goes here (https listeners and backends
    // did until they were served); a valid configuration has nothing refused today.
    let refused: Vec<NotServed> = Vec::new();
    let mut warnings = Vec::new();
    for settings in &config.backend_settings {
        check_settings(settings, &mut warnings);
    }
    if !config.probes.is_empty() {
        warnings
            .push("probes are read but not run yet: every backend counts as healthy".to_owned());
    }
    if refused.is_empty() {
        return Ok(Plan { warnings });
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
        let plan = plan(&config).expect("served");
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
        let plan = plan(&config).expect("served");
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
        let plan = plan(&config).expect("served");
        assert!(
            plan.warnings.iter().all(|w| !w.contains("https")),
            "{:?}",
            plan.warnings
        );
    }
}

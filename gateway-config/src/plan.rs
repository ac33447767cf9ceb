//! What to warn about in a [`Config`] that `gateway check` accepts and the gateway serves
//! (everything it accepts is applied): settings that are valid but probably not meant,
//! logged at start-up and printed by `gateway check`.

use crate::{BackendSettings, Config};

/// What to warn about when the configuration is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Valid but probably not meant; logged at start-up.
    pub warnings: Vec<String>,
}

pub fn plan(config: &Config) -> Plan {
    let mut warnings = Vec::new();
    for settings in &config.backend_settings {
        check_settings(settings, &mut warnings);
    }
    check_admin(&config.global, &mut warnings);
    Plan { warnings }
}

/// A token file others can read (refused by ssh for keys, but Kubernetes mounts secrets
/// 0644 by default, so only a warning), and an admin listener off loopback without a token.
fn check_admin(global: &crate::Global, warnings: &mut Vec<String>) {
    if let Some(token) = global
        .admin_token
        .as_ref()
        .filter(|t| t.readable_by_others())
    {
        warnings.push(format!(
            "global.admin_token_file: {} is readable by other users (mode {:o}); chmod 600 it",
            token.path.display(),
            token.mode
        ));
    }
    if let Some(admin) = global.admin.filter(|a| !a.ip().is_loopback()) {
        if global.admin_token.is_none() {
            warnings.push(format!(
                "global.admin: the admin listener is on {admin}, off loopback, and asks for no \
                 token: whoever reaches it can reload the configuration; set admin_token_file"
            ));
        }
    }
}

fn check_settings(settings: &BackendSettings, warnings: &mut Vec<String>) {
    let key = format!("backend_settings.{}", settings.name);
    if settings.passive.failures == 0 && settings.probe.is_none() {
        warnings.push(format!(
            "{key}: passive_failures = 0 and no probe: a dead backend is only noticed by the \
             default probe (every 30 s), if default_probes is on"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{self as config, Protocol, Sources};

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
    fn a_backend_nothing_checks_is_a_warning() {
        let text = "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
            [[backend_pools]]\nname = \"p\"\naddresses = [\"10.0.0.1\"]\n\
            [[backend_settings]]\nname = \"s\"\nport = 8080\nprotocol = \"http\"\n\
            passive_failures = 0\nconnection_draining = true\n\
            [[rules]]\nname = \"r\"\nkind = \"basic\"\nlistener = \"l\"\n\
            backend_pool = \"p\"\nbackend_settings = \"s\"\n";
        let config = config::from_toml(text, "t.toml", Path::new(".")).expect("valid");
        let plan = plan(&config);
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(
            plan.warnings[0].starts_with("backend_settings.s: passive_failures = 0 and no probe"),
            "{:?}",
            plan.warnings
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

    #[test]
    fn an_open_admin_is_a_warning() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("plan-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let token = dir.join("token");
        std::fs::write(&token, "t0ken\n").expect("write the token");
        let base = "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
            [[backend_pools]]\nname = \"p\"\naddresses = [\"10.0.0.1\"]\n\
            [[backend_settings]]\nname = \"s\"\nport = 8080\nprotocol = \"http\"\n\
            [[rules]]\nname = \"r\"\nkind = \"basic\"\nlistener = \"l\"\n\
            backend_pool = \"p\"\nbackend_settings = \"s\"\n";
        let warnings = |global: &str, mode: u32| {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let text = format!("[global]\n{global}{base}");
            let config = config::from_toml(&text, "t.toml", &dir).expect("valid");
            plan(&config).warnings
        };
        assert!(warnings("admin = \"9090\"\n", 0o600).is_empty());
        assert!(warnings("admin = \"9090\"\nadmin_token_file = \"token\"\n", 0o600).is_empty());
        let open = warnings("admin = \"9090\"\nadmin_token_file = \"token\"\n", 0o644);
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(
            open[0].contains("readable by other users (mode 644)"),
            "{open:?}"
        );
        let lan = warnings("admin = \"0.0.0.0:9090\"\n", 0o600);
        assert_eq!(lan.len(), 1, "{lan:?}");
        assert!(
            lan[0].contains("off loopback, and asks for no token"),
            "{lan:?}"
        );
    }
}

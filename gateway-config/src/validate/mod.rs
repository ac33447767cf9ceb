//! [`RawDocument`] → [`Config`]: every check, every problem collected (none stops the
//! others), defaults applied, names resolved to shared objects.
//!
//! Order: global, probes, backend settings (they name probes), pools, listeners, rules
//! (they name all of those), then the binds the listeners share.

mod backends;
mod binds;
pub(super) mod global;
mod listeners;
mod names;
mod probes;
mod redirects;
mod rules;

use std::{path::Path, sync::Arc, time::Duration};

use super::{
    defaults,
    document::{Element, Origin, RawDocument},
    error::ConfigError,
    matching::Invalid,
    model::Config,
};
use names::Names;

/// Defaults of the `[[backend_settings]]` keys that command-line flags may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingsDefaults {
    pub tunnel_idle_timeout_secs: u64,
    pub tunnel_max_lifetime_secs: u64,
    pub max_tunnel_backlog_bytes: u64,
    pub splice_after_bytes: u64,
    pub splice_after_ms: u64,
}

impl Default for SettingsDefaults {
    fn default() -> Self {
        Self {
            tunnel_idle_timeout_secs: defaults::TUNNEL_IDLE_TIMEOUT_SECS,
            tunnel_max_lifetime_secs: defaults::TUNNEL_MAX_LIFETIME_SECS,
            max_tunnel_backlog_bytes: defaults::MAX_TUNNEL_BACKLOG_BYTES,
            splice_after_bytes: defaults::SPLICE_AFTER_BYTES,
            splice_after_ms: defaults::SPLICE_AFTER_MS,
        }
    }
}

/// What validation needs besides the document.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// Relative PEM paths are taken from here: the configuration file's directory.
    pub base_dir: &'a Path,
    pub settings_defaults: SettingsDefaults,
}

/// Checks everything; the runtime configuration, or every problem found.
pub fn validate(document: &RawDocument, context: &Context<'_>) -> Result<Config, Vec<ConfigError>> {
    let mut checker = Checker {
        context,
        errors: Vec::new(),
    };
    let c = &mut checker;
    let global = global::check(document.global.as_ref(), c);

    let probe_names = Names::register(&document.probes, names::PROBE, c);
    let probes = probes::check(&document.probes, c);
    let settings_names = Names::register(&document.backend_settings, names::SETTINGS, c);
    let settings = backends::settings(&document.backend_settings, &probe_names, &probes, c);
    let pool_names = Names::register(&document.backend_pools, names::POOL, c);
    let pools = backends::pools(&document.backend_pools, c);
    let listener_names = Names::register(&document.listeners, names::LISTENER, c);
    let listeners = listeners::check(&document.listeners, c);

    Names::register(&document.rules, names::RULE, c);
    let targets = rules::Targets {
        listener_names: &listener_names,
        listeners: &listeners,
        pool_names: &pool_names,
        pools: &pools,
        settings_names: &settings_names,
        settings: &settings,
        paths: global.paths,
    };
    let rules = rules::check(&document.rules, &targets, c);
    let binds = binds::group(&document.listeners, &listeners, &rules, global.admin, c);

    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    // No problem found: every object validated, so none of these is `None`.
    Ok(Config {
        global,
        binds,
        rules: rules.checked.into_iter().flatten().collect(),
        pools: pools.into_iter().flatten().collect(),
        backend_settings: settings.into_iter().flatten().collect(),
        probes: probes.into_iter().flatten().collect(),
    })
}

/// Collects problems while the checks run.
pub(super) struct Checker<'a> {
    context: &'a Context<'a>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub fn base_dir(&self) -> &Path {
        self.context.base_dir
    }

    pub fn settings_defaults(&self) -> SettingsDefaults {
        self.context.settings_defaults
    }

    pub fn error(
        &mut self,
        origin: &Origin,
        field: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.errors.push(origin.error(field, problem, fix));
    }

    pub fn invalid(&mut self, origin: &Origin, field: &str, invalid: Invalid) {
        self.error(origin, field, invalid.problem, invalid.fix);
    }

    /// A number of seconds that must not be 0; `None` gives `default`.
    pub fn positive_secs(
        &mut self,
        origin: &Origin,
        field: &str,
        value: Option<u64>,
        default: u64,
    ) -> Duration {
        let secs = value.unwrap_or(default);
        if secs == 0 {
            self.error(
                origin,
                field,
                format!("{field} is 0, which would time out at once"),
                format!("give at least 1 (the default is {default})"),
            );
        }
        Duration::from_secs(secs)
    }

    /// A count that must be at least 1; `None` gives `default`.
    pub fn at_least_one(
        &mut self,
        origin: &Origin,
        field: &str,
        value: Option<u32>,
        default: u32,
    ) -> u32 {
        let n = value.unwrap_or(default);
        if n == 0 {
            self.error(
                origin,
                field,
                format!("{field} is 0"),
                format!("give at least 1 (the default is {default})"),
            );
        }
        n
    }
}

/// The elements that deserialized, with their index.
fn read<T>(elements: &[Element<T>]) -> impl Iterator<Item = (usize, &Origin, &T)> {
    elements
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.raw.as_ref().map(|raw| (i, &e.origin, raw)))
}

/// `Some(Arc)` per element that validated, aligned with the elements.
type Checked<T> = Vec<Option<Arc<T>>>;

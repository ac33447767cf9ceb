//! `gateway-config`: the gateway's configuration, read and validated into an immutable
//! [`Config`] without serving anything, and the PEM files it names ([`pem`]). The daemon
//! (`gateway-user`, as `gateway::config`) and `gateway import-azure` (`gateway-azure`)
//! depend on it; it depends on no other crate of the workspace.
//!
//! The configuration is a TOML file (`examples/gateway.toml` shows every key), the
//! `--listen`/`--backend` shortcut, or both, with command-line flags on top.
//!
//! Text → [`document`] (raw serde structs, each object read on its own) → [`validate`]
//! (every problem collected, defaults applied, names resolved) → [`Config`], immutable.
//! Problems come back as [`ConfigErrors`], each naming the file, line, key path, what is
//! wrong and how to fix it.

mod admin_token;
pub mod defaults;
mod document;
mod error;
mod lines;
mod matching;
pub mod model;
mod overrides;
pub mod path;
pub mod pem;
pub mod plan;
pub mod raw;
mod shortcut;
mod validate;

#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use admin_token::AdminToken;
pub use error::{ConfigError, ConfigErrors};
pub use matching::Invalid;
pub use model::*;
pub use overrides::Overrides;
pub use validate::global::admin_addr;

use document::RawDocument;
use error::COMMAND_LINE;
use validate::Context;

/// Where a configuration comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// `--listen`: http listeners added next to the file's, with a basic rule each to the
    /// pool of `--backend`.
    pub listen: Vec<SocketAddr>,
    /// `--backend`.
    pub backends: Vec<SocketAddr>,
    pub overrides: Overrides,
}

impl Sources {
    /// Just a file, as `gateway check` reads it.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(path.into()),
            ..Self::default()
        }
    }
}

/// Reads, checks and builds the configuration; every problem found, if any.
pub fn load(sources: &Sources) -> Result<Config, ConfigErrors> {
    match &sources.file {
        Some(path) => {
            let label = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigErrors(vec![ConfigError::new(
                    label.clone(),
                    "",
                    format!("cannot read the configuration file: {error}"),
                    "check the path given to --config",
                )])
            })?;
            let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
            build(Some((&text, &label)), base_dir, sources)
        }
        None => build(None, Path::new("."), sources),
    }
}

/// [`load`] for a file's `text` already read; relative PEM paths are taken from
/// `base_dir`. `label` names the file in problems.
pub fn from_toml(text: &str, label: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    build(Some((text, label)), base_dir, &Sources::default())
}

fn build(
    file: Option<(&str, &str)>,
    base_dir: &Path,
    sources: &Sources,
) -> Result<Config, ConfigErrors> {
    let mut errors = sources.overrides.check();
    let mut document = RawDocument::default();
    let mut lines = None;
    let mut label = None;
    if let Some((text, name)) = file {
        let file_label: Arc<str> = Arc::from(name);
        let parsed = document::parse(text, &file_label);
        errors.extend(parsed.errors);
        if parsed.syntax_error {
            return Err(ConfigErrors(errors));
        }
        document = parsed.document;
        lines = Some(parsed.lines);
        label = Some(file_label);
    }
    shortcut::add(&mut document, &sources.listen, &sources.backends);
    let context = Context {
        base_dir,
        settings_defaults: sources.overrides.settings_defaults(),
    };
    let result = validate::validate(&document, &context);
    match result {
        Ok(_) if document.listeners.is_empty() => errors.push(ConfigError::new(
            label.as_deref().unwrap_or(COMMAND_LINE),
            "listeners",
            "no listener is defined, so there is nothing to serve",
            "add a [[listeners]] entry with its rule (see examples/gateway.toml), or pass \
             --listen and --backend",
        )),
        Ok(mut config) if errors.is_empty() => match sources.overrides.apply(&mut config.global) {
            Ok(()) => return Ok(config),
            Err(error) => errors.push(error),
        },
        Ok(_) => {}
        Err(found) => {
            // Keys left out because they were wrong are not reported again as missing.
            let skipped = document.skipped();
            let consequence = |key: &str| {
                skipped.iter().any(|s| {
                    key.strip_prefix(s)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                })
            };
            errors.extend(found.into_iter().filter(|e| !consequence(&e.key)));
        }
    }
    if let (Some(lines), Some(label)) = (&lines, &label) {
        for error in &mut errors {
            if error.line.is_none() && error.file == **label {
                error.line = lines.line_of_key(&error.key);
            }
        }
    }
    // In the order of the file; problems with flags first.
    errors.sort_by_key(|e| (label.as_deref().is_some_and(|l| e.file == l), e.line));
    Err(ConfigErrors(errors))
}

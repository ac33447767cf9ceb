//! Unit tests of the configuration: one per kind of problem (`errors_*.rs`), many problems
//! at once, defaults, the shortcut, flags, and the example file.

mod errors_document;
mod errors_listeners;
mod errors_objects;
mod errors_rules;
mod model;

use std::path::{Path, PathBuf};

use super::{from_toml, Config, ConfigError, ConfigErrors};

/// The file name problems are reported against.
const FILE: &str = "test.toml";

/// One http listener with a basic rule to one pool: valid.
const BASE: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"

[[backend_pools]]
name = "pool"
addresses = ["127.0.0.1:3000"]

[[backend_settings]]
name = "settings"
port = 3000
protocol = "http"

[[rules]]
name = "rule"
kind = "basic"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"
"#;

/// `examples/`: relative PEM paths (`certs/example.crt`) are taken from here.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    from_toml(text, FILE, &examples_dir())
}

/// `BASE` with `from` replaced by `to` (which must be found).
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load(text) {
        Ok(config) => panic!("accepted an invalid configuration: {config:#?}\n{text}"),
        Err(errors) => errors.0,
    }
}

/// Asserts that `text` has exactly one problem, at `key`, whose fix mentions `fix`, and
/// that it names the file and a line; returns it.
#[track_caller]
fn only_problem(text: &str, key: &str, fix: &str) -> ConfigError {
    let errors = errors(text);
    let listed = ConfigErrors(errors.clone()).to_string();
    assert_eq!(
        errors.len(),
        1,
        "expected one problem at {key}, got:\n{listed}"
    );
    let error = &errors[0];
    assert_eq!(error.key, key, "{listed}");
    assert!(error.fix.contains(fix), "fix {:?} lacks {fix:?}", error.fix);
    assert_eq!(error.file, FILE);
    if !key.is_empty() && key != "listeners" {
        assert!(error.line.is_some(), "no line: {listed}");
    }
    assert!(!error.problem.is_empty());
    error.clone()
}

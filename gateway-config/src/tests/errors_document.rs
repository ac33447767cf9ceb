//! Problems found reading the TOML: syntax, unknown keys, wrong types, missing keys.

use super::*;

#[test]
fn toml_syntax() {
    let error = only_problem("[[listeners]\nname = \"web\"\n", "", "TOML syntax");
    assert_eq!(error.line, Some(1));
    assert!(
        error.problem.contains("not valid TOML"),
        "{}",
        error.problem
    );
}

#[test]
fn unknown_top_level_key() {
    let text = format!("[globals]\nadmin = \"127.0.0.1:9090\"\n{BASE}");
    let error = only_problem(&text, "globals", "[global]");
    assert_eq!(error.line, Some(1));
}

#[test]
fn unknown_key_in_an_object() {
    let text = base_with(
        "protocol = \"http\"\n",
        "protocol = \"http\"\ncolour = \"red\"\n",
    );
    let error = only_problem(&text, "listeners[0].colour", "correct its spelling");
    assert!(
        error.problem.contains("unknown field `colour`"),
        "{}",
        error.problem
    );
    assert_eq!(error.line, Some(6));
}

#[test]
fn wrong_type() {
    let text = base_with("port = 3000", "port = \"3000\"");
    let error = only_problem(&text, "backend_settings[0].port", "type");
    assert!(error.problem.contains("invalid type"), "{}", error.problem);
}

#[test]
fn missing_required_key() {
    let text = base_with("bind = \"127.0.0.1:8080\"\n", "");
    only_problem(&text, "listeners[0].bind", "add `bind = ...`");
}

#[test]
fn unknown_enum_value() {
    let text = base_with("protocol = \"http\"", "protocol = \"ftp\"");
    let error = only_problem(&text, "listeners[0].protocol", "values listed");
    assert!(error.problem.contains("`https`"), "{}", error.problem);
}

#[test]
fn array_of_tables_expected() {
    let text = format!("probes = 3\n{BASE}");
    only_problem(&text, "probes", "[[probes]]");
}

#[test]
fn every_wrong_key_of_one_object_is_reported_and_the_rest_still_checked() {
    // Two unknown keys and a bad optional value in one listener, and a bad bind: four.
    let text = base_with(
        "bind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n",
        "bind = \"127.0.0.1:80800\"\nprotocol = \"http\"\nhost_names = \"x\"\na = 1\nb = 2\n",
    );
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listeners[0].bind",
            "listeners[0].host_names",
            "listeners[0].a",
            "listeners[0].b"
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
}

#[test]
fn a_wrong_required_key_is_not_also_reported_missing() {
    let text = base_with("port = 3000", "port = 70000");
    let error = only_problem(&text, "backend_settings[0].port", "type");
    assert!(error.problem.contains("70000"), "{}", error.problem);
}

#[test]
fn nothing_to_serve() {
    let error = only_problem(
        "[global]\nlog_level = \"warn\"\n",
        "listeners",
        "[[listeners]]",
    );
    assert_eq!(error.line, None, "not written, so no line");
}

//! Problems with rules, path rules and redirects.

use super::*;

/// `BASE` plus an https listener "secure" (own bind), and `rule` as the rule of "web".
fn with_rule(rule: &str) -> String {
    let start = BASE.find("[[rules]]").expect("BASE has a rule");
    format!(
        "{}{rule}\n\n[[listeners]]\nname = \"secure\"\nbind = \"127.0.0.1:8443\"\n\
         protocol = \"https\"\ncertificate = \"certs/example.crt\"\nprivate_key = \"certs/example.key\"\n\n\
         [[rules]]\nname = \"secure\"\nkind = \"basic\"\nlistener = \"secure\"\n\
         backend_pool = \"pool\"\nbackend_settings = \"settings\"\n",
        &BASE[..start]
    )
}

const PATH_RULE: &str = "[[rules]]\nname = \"paths\"\nkind = \"path_based\"\nlistener = \"web\"\n\
    default_backend_pool = \"pool\"\ndefault_backend_settings = \"settings\"\n\n\
    [[rules.path_rules]]\nname = \"api\"\npaths = [\"/api/*\"]\nbackend_pool = \"pool\"\n\
    backend_settings = \"settings\"\n";

#[test]
fn unknown_pool_lists_the_defined_ones() {
    let text = base_with("backend_pool = \"pool\"", "backend_pool = \"pools\"");
    let error = only_problem(
        &text,
        "rules[0].backend_pool",
        "[[backend_pools]] entry named \"pools\"",
    );
    assert!(
        error
            .problem
            .contains("the defined backend pools are \"pool\""),
        "{}",
        error.problem
    );
}

#[test]
fn unknown_listener() {
    let text = base_with("listener = \"web\"", "listener = \"www\"");
    let errors = errors(&text);
    // The rule names a listener that does not exist, and "web" is left without a rule.
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["listeners[0]", "rules[0].listener"]);
    assert!(errors[1]
        .problem
        .contains("the defined listeners are \"web\""));
}

#[test]
fn key_of_another_kind() {
    let text = base_with(
        "kind = \"basic\"",
        "kind = \"basic\"\ndefault_backend_pool = \"pool\"",
    );
    only_problem(&text, "rules[0].default_backend_pool", "change kind");
}

#[test]
fn basic_rule_without_settings() {
    let text = base_with("backend_settings = \"settings\"\n", "");
    only_problem(&text, "rules[0].backend_settings", "[[backend_settings]]");
}

#[test]
fn priority_out_of_range_and_duplicate() {
    let text = with_rule(
        "[[rules]]\nname = \"rule\"\nkind = \"basic\"\nlistener = \"web\"\npriority = 0\n\
         backend_pool = \"pool\"\nbackend_settings = \"settings\"",
    );
    only_problem(&text, "rules[0].priority", "20000");
    let text = with_rule(
        "[[rules]]\nname = \"rule\"\nkind = \"basic\"\nlistener = \"web\"\npriority = 7\n\
         backend_pool = \"pool\"\nbackend_settings = \"settings\"",
    )
    .replace(
        "listener = \"secure\"\n",
        "listener = \"secure\"\npriority = 7\n",
    );
    only_problem(&text, "rules[1].priority", "its own priority");
}

#[test]
fn path_syntax() {
    let text = with_rule(&PATH_RULE.replace("\"/api/*\"", "\"/api/*\", \"/v*/x\""));
    only_problem(&text, "rules[0].path_rules[0].paths[1]", "\"/api/*\"");
}

#[test]
fn path_listed_by_two_path_rules() {
    let text = with_rule(&format!(
        "{PATH_RULE}\n[[rules.path_rules]]\nname = \"api2\"\npaths = [\"/api/*\"]\n\
         backend_pool = \"pool\"\nbackend_settings = \"settings\"\n"
    ));
    let error = only_problem(&text, "rules[0].path_rules[1].paths[0]", "once per rule");
    assert!(
        error.problem.contains("rules[0].path_rules[0].paths[0]"),
        "{}",
        error.problem
    );
}

#[test]
fn path_rule_with_pool_and_redirect() {
    let text = with_rule(&PATH_RULE.replace(
        "backend_pool = \"pool\"\nbackend_settings",
        "redirect = { target_url = \"https://example.com/\" }\nbackend_pool = \"pool\"\nbackend_settings",
    ));
    only_problem(&text, "rules[0].path_rules[0].redirect", "keep one");
}

#[test]
fn path_based_without_path_rules_or_default() {
    let rule = "[[rules]]\nname = \"paths\"\nkind = \"path_based\"\nlistener = \"web\"";
    let errors = errors(&with_rule(rule));
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["rules[0].default_backend_pool", "rules[0].path_rules"]
    );
}

#[test]
fn redirect_to_its_own_listener() {
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"\n\
                redirect = { target_listener = \"web\" }";
    only_problem(
        &with_rule(rule),
        "rules[0].redirect.target_listener",
        "another listener",
    );
}

#[test]
fn redirect_to_an_unknown_listener() {
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"\n\
                redirect = { target_listener = \"secured\" }";
    let error = only_problem(
        &with_rule(rule),
        "rules[0].redirect.target_listener",
        "[[listeners]]",
    );
    assert!(error.problem.contains("\"secure\""), "{}", error.problem);
}

#[test]
fn redirect_status() {
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"\n\
                redirect = { target_listener = \"secure\", status = 303 }";
    only_problem(&with_rule(rule), "rules[0].redirect.status", "308");
}

#[test]
fn redirect_target_url() {
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"\n\
                redirect = { target_url = \"/relative\" }";
    only_problem(
        &with_rule(rule),
        "rules[0].redirect.target_url",
        "scheme and host",
    );
}

#[test]
fn redirect_without_or_with_two_targets() {
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"\nredirect = {}";
    only_problem(&with_rule(rule), "rules[0].redirect", "target_listener");
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"\n\
                redirect = { target_listener = \"secure\", target_url = \"https://a/\" }";
    only_problem(&with_rule(rule), "rules[0].redirect.target_url", "keep one");
    let rule = "[[rules]]\nname = \"r\"\nkind = \"redirect\"\nlistener = \"web\"";
    only_problem(&with_rule(rule), "rules[0].redirect", "target_url");
}

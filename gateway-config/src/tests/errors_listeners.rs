//! Problems with listeners, and with listeners sharing a bind.

use super::*;

const HTTPS: &str = "protocol = \"https\"\ncertificate = \"certs/example.crt\"\nprivate_key = \"certs/example.key\"";

/// A second listener `name` on `bind` (extra keys in `keys`), with its own basic rule.
fn second(name: &str, bind: &str, keys: &str) -> String {
    format!(
        "{BASE}\n[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\n{keys}\n\n\
         [[rules]]\nname = \"rule-{name}\"\nkind = \"basic\"\nlistener = \"{name}\"\n\
         backend_pool = \"pool\"\nbackend_settings = \"settings\"\n"
    )
}

#[test]
fn bind_not_an_address() {
    let text = base_with("127.0.0.1:8080", "localhost:8080");
    only_problem(&text, "listeners[0].bind", "0.0.0.0:443");
}

#[test]
fn invalid_name() {
    let text = base_with("name = \"web\"", "name = \"-web\"")
        .replace("listener = \"web\"", "listener = \"-web\"");
    only_problem(&text, "listeners[0].name", "letters, digits");
}

#[test]
fn duplicate_name() {
    let text = format!(
        "{BASE}\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\nprotocol = \"http\"\n"
    );
    let error = only_problem(&text, "listeners[1].name", "its own name");
    assert!(error.problem.contains("listeners[0]"), "{}", error.problem);
}

#[test]
fn https_without_certificate_or_key() {
    let text = base_with("protocol = \"http\"", "protocol = \"https\"");
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["listeners[0].certificate", "listeners[0].private_key"]
    );
    assert!(errors.iter().all(|e| e.fix.contains("PEM")));
}

#[test]
fn certificate_file_missing() {
    let tls = HTTPS.replace("certs/example.crt", "certs/missing.crt");
    let text = base_with("protocol = \"http\"", &tls);
    let error = only_problem(
        &text,
        "listeners[0].certificate",
        "existing, readable PEM file",
    );
    assert!(error.problem.contains("missing.crt"), "{}", error.problem);
}

#[test]
fn key_file_is_not_pem() {
    // A TOML file is no private key.
    let tls = HTTPS.replace("certs/example.key", "gateway.toml");
    let text = base_with("protocol = \"http\"", &tls);
    only_problem(&text, "listeners[0].private_key", "BEGIN PRIVATE KEY");
}

#[test]
fn key_of_another_certificate() {
    let dir = std::env::temp_dir().join(format!("gateway-config-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let other = dir.join("other.key");
    // Any other certificate's key.
    let leaf = test_pki::Ca::new("other").leaf(&["other.test"]);
    std::fs::write(&other, &leaf.key_pem).expect("write the key");
    let tls = HTTPS.replace("certs/example.key", &other.display().to_string());
    let text = base_with("protocol = \"http\"", &tls);
    let error = only_problem(&text, "listeners[0].private_key", "issued for");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        error.problem.contains("does not belong to certificate")
            && error.problem.contains("other.key")
            && error.problem.contains("example.crt"),
        "{}",
        error.problem
    );
}

#[test]
fn certificate_on_an_http_listener() {
    let text = base_with(
        "protocol = \"http\"",
        "protocol = \"http\"\ncertificate = \"certs/example.crt\"",
    );
    only_problem(&text, "listeners[0].certificate", "protocol = \"https\"");
}

#[test]
fn shared_bind_with_another_protocol() {
    let text = second(
        "secure",
        "127.0.0.1:8080",
        &format!("{HTTPS}\nhost_names = [\"a.example.com\"]"),
    );
    let error = only_problem(&text, "listeners[1].protocol", "share its protocol");
    assert!(error.problem.contains("\"web\""), "{}", error.problem);
}

#[test]
fn two_catch_alls_on_one_bind() {
    let text = second("other", "127.0.0.1:8080", "protocol = \"http\"");
    only_problem(
        &text,
        "listeners[1].host_names",
        "give this listener host_names",
    );
}

#[test]
fn host_name_claimed_twice_on_a_bind() {
    let text = second(
        "a",
        "127.0.0.1:8080",
        "protocol = \"http\"\nhost_names = [\"a.example.com\"]",
    )
    .replace(
        "[[backend_pools]]",
        "[[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\nhost_names = [\"x.example.com\", \"A.example.com\"]\n\n[[rules]]\nname = \"rule-b\"\nkind = \"basic\"\nlistener = \"b\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n\n[[backend_pools]]",
    );
    let error = only_problem(
        &text,
        "listeners[2].host_names[0]",
        "belongs to one listener",
    );
    assert!(error.problem.contains("\"b\""), "{}", error.problem);
}

#[test]
fn host_name_syntax() {
    let text = second(
        "a",
        "127.0.0.1:8080",
        "protocol = \"http\"\nhost_names = [\"a.example.com\", \"www.*.com\"]",
    );
    only_problem(&text, "listeners[1].host_names[1]", "*.example.com");
}

#[test]
fn empty_host_names() {
    let text = second(
        "a",
        "127.0.0.1:8080",
        "protocol = \"http\"\nhost_names = []",
    );
    only_problem(&text, "listeners[1].host_names", "remove host_names");
}

#[test]
fn listener_without_a_rule() {
    let text = format!("{BASE}\n[[listeners]]\nname = \"lonely\"\nbind = \"127.0.0.1:8081\"\nprotocol = \"http\"\n");
    let error = only_problem(&text, "listeners[1]", "listener = \"lonely\"");
    assert_eq!(error.line, Some(23));
}

#[test]
fn listener_with_two_rules() {
    let text = format!(
        "{BASE}\n[[rules]]\nname = \"again\"\nkind = \"basic\"\nlistener = \"web\"\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n"
    );
    let error = only_problem(&text, "rules[1].listener", "its own listener");
    assert!(error.problem.contains("rules[0]"), "{}", error.problem);
}

#[test]
fn overlapping_binds() {
    let text = second("any", "0.0.0.0:8080", "protocol = \"http\"");
    only_problem(&text, "listeners[1].bind", "same bind address");
}

#[test]
fn bind_on_the_admin_address() {
    let text = format!("[global]\nadmin = \"127.0.0.1:8080\"\n{BASE}");
    only_problem(&text, "listeners[0].bind", "another port");
}

#[test]
fn port_zero_binds_never_share() {
    let text = base_with("127.0.0.1:8080", "127.0.0.1:0");
    let text = second("other", "127.0.0.1:0", "protocol = \"http\"").replacen(BASE, &text, 1);
    let config = load(&text).expect("two port-0 listeners are two sockets");
    assert_eq!(config.binds.len(), 2);
}

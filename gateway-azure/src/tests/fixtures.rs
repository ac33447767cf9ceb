//! The fixtures: Azure's WebSocket page's snippets, a full ARM template, an `az` export.

use std::path::Path;

use super::{entries, import_text, reported};
use crate::{convert::PLACEHOLDER, report::Kind};
use gateway_config::{self as config, model::Protocol, model::RuleKind};

const SEED: &str = include_str!("../../../tests/fixtures/azure/seed-websocket-fragment.json");
const FULL: &str = include_str!("../../../tests/fixtures/azure/full-template.json");
const EXPORT: &str = include_str!("../../../tests/fixtures/azure/http-only-export.json");

fn example_cert(file: &str) -> String {
    format!("{}/../examples/certs/{file}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn seed_fragment_says_what_it_references_but_lacks() {
    let import = import_text(SEED);
    let listeners = &import.imported.listeners;
    assert_eq!(listeners.len(), 2);
    let https = &listeners[0].raw;
    assert_eq!(https.name, "appGatewayHttpsListener");
    assert_eq!(https.protocol, Protocol::Https);
    // The frontend ports are not in the fragment: no port is guessed from their names.
    assert_eq!(https.bind, format!("0.0.0.0:{PLACEHOLDER}"));
    assert_eq!(
        https.certificate.as_deref(),
        Some("CHANGE-ME/appGatewaySslCert1.pem")
    );
    assert_eq!(
        https.private_key.as_deref(),
        Some("CHANGE-ME/appGatewaySslCert1.key")
    );
    assert_eq!(listeners[1].raw.protocol, Protocol::Http);

    let rules = &import.imported.rules;
    assert_eq!(rules.len(), 2);
    let rule = &rules[0].raw.rule;
    assert_eq!(rule.name, "ruleName1", "<ruleName1> made a valid name");
    assert_eq!(rule.kind, RuleKind::Basic);
    assert_eq!(rule.listener, "appGatewayHttpsListener");
    assert_eq!(rule.backend_pool.as_deref(), Some("ContosoServerPool"));
    assert_eq!(
        rule.backend_settings.as_deref(),
        Some("appGatewayBackendHttpSettings")
    );
    assert_eq!(rules[1].raw.rule.listener, "appGatewayHttpListener");

    let rule_at = "requestRoutingRules/<ruleName1>";
    for missing in [
        "backendAddressPools/ContosoServerPool is not in the input",
        "backendHttpSettingsCollection/appGatewayBackendHttpSettings is not in the input",
    ] {
        assert!(
            reported(&import, Kind::Unresolved, rule_at, missing),
            "{missing}"
        );
    }
    let listener_at = "httpListeners/appGatewayHttpsListener";
    for missing in [
        "frontendPorts/appGatewayFrontendPort443 is not in the input",
        "sslCertificates/appGatewaySslCert1 is not in the input",
    ] {
        assert!(
            reported(&import, Kind::Unresolved, listener_at, missing),
            "{missing}"
        );
    }
    assert!(reported(
        &import,
        Kind::Changed,
        rule_at,
        "named \"ruleName1\""
    ));
    // What the snippet's sloppiness cost: all forgiven, all said.
    let input = entries(&import, Kind::Input, "").join("\n");
    assert!(input.contains("fragment"), "{input}");
    assert!(input.contains("2 trailing comma(s)"), "{input}");
    assert!(reported(
        &import,
        Kind::Input,
        rule_at,
        "\"')]\" after the name"
    ));
    assert!(reported(
        &import,
        Kind::Input,
        listener_at,
        "\"'\" after the name"
    ));

    // The check lists the missing objects and the placeholders.
    let errors = config::from_toml(&import.toml, "seed.toml", Path::new("."))
        .expect_err("the fragment lacks pools, settings and ports");
    let text = errors.to_string();
    assert!(
        text.contains("backend pool \"ContosoServerPool\" is not defined"),
        "{text}"
    );
    assert!(
        text.contains("bind \"0.0.0.0:CHANGE-ME\" is not an IP:PORT address"),
        "{text}"
    );
}

#[test]
fn full_template_converts_every_collection() {
    let import = import_text(FULL);
    let imported = &import.imported;
    assert!(
        import.described.contains("appgw-contoso"),
        "{}",
        import.described
    );

    let [http, https] = [&imported.listeners[0].raw, &imported.listeners[1].raw];
    assert_eq!(
        (http.name.as_str(), http.bind.as_str()),
        ("http-listener", "0.0.0.0:80")
    );
    assert_eq!(http.host_names, None);
    // Named by a template variable; port by resourceId().
    assert_eq!(
        (https.name.as_str(), https.bind.as_str()),
        ("https-listener", "0.0.0.0:443")
    );
    assert_eq!(
        https.host_names,
        Some(vec![
            "www.contoso.com".to_owned(),
            "chat.contoso.com".to_owned()
        ])
    );
    assert_eq!(
        https.certificate.as_deref(),
        Some("CHANGE-ME/contoso-cert.pem")
    );

    let pools: Vec<_> = imported
        .pools
        .iter()
        .map(|p| (&p.raw.name, &p.raw.addresses))
        .collect();
    assert_eq!(pools[0].1, &["10.0.1.4", "10.0.1.5"]);
    assert_eq!(pools[1].1, &["chat-1.contoso.internal", "10.0.2.4"]);

    let web = &imported.settings[0].raw;
    assert_eq!(web.port, 8080, "from the parameter's default");
    assert_eq!(web.cookie_affinity, None);
    let ws = &imported.settings[1].raw;
    assert_eq!((ws.port, ws.request_timeout_secs), (8081, Some(60)));
    assert_eq!(ws.cookie_affinity, Some(true));
    assert_eq!(ws.affinity_cookie_name.as_deref(), Some("ChatAffinity"));
    assert_eq!(
        (ws.connection_draining, ws.draining_timeout_secs),
        (Some(true), Some(120))
    );
    assert_eq!(ws.host_header.as_deref(), Some("chat.contoso.com"));
    assert_eq!(ws.probe.as_deref(), Some("ws-health"));

    let redirect_rule = &imported.rules[0].raw.rule;
    assert_eq!(redirect_rule.kind, RuleKind::Redirect);
    let redirect = redirect_rule.redirect.as_ref().expect("a redirect");
    assert_eq!(redirect.target_listener.as_deref(), Some("https-listener"));
    assert_eq!(
        (redirect.status, redirect.include_path),
        (Some(301), Some(true))
    );
    let paths = &imported.rules[1].raw;
    assert_eq!(paths.rule.kind, RuleKind::PathBased);
    assert_eq!(paths.rule.priority, Some(20));
    assert_eq!(paths.rule.default_backend_pool.as_deref(), Some("web-pool"));
    assert_eq!(paths.path_rules[0].raw.paths, ["/ws/*"]);
    assert_eq!(
        paths.path_rules[0].raw.backend_pool.as_deref(),
        Some("ws-pool")
    );
    let blog = paths.path_rules[1]
        .raw
        .redirect
        .as_ref()
        .expect("a redirect");
    assert_eq!(
        blog.target_url.as_deref(),
        Some("https://blog.contoso.com/")
    );
    assert_eq!((blog.status, blog.include_path), (Some(302), Some(false)));

    let probe = &imported.probes[0].raw;
    assert_eq!(probe.host.as_deref(), Some("chat.contoso.internal"));
    assert_eq!(
        (probe.interval_secs, probe.timeout_secs),
        (Some(15), Some(5))
    );
    assert_eq!(probe.match_status_codes, Some(vec!["200-399".to_owned()]));
    assert_eq!(probe.match_body.as_deref(), Some("ok"));

    // Not carried over, each said once.
    let not_carried = entries(&import, Kind::NotCarried, "").join("\n");
    for feature in [
        "sku:",
        "autoscaleConfiguration:",
        "webApplicationFirewallConfiguration:",
        "rewriteRuleSets:",
        "enableHttp2:",
        "gatewayIPConfigurations:",
    ] {
        assert!(not_carried.contains(feature), "{feature} in\n{not_carried}");
    }
    assert!(reported(
        &import,
        Kind::NotCarried,
        "frontendIPConfigurations/appGwPrivateFrontendIp",
        "private frontend IP 10.0.0.10"
    ));
    assert!(reported(
        &import,
        Kind::NotCarried,
        "urlPathMaps/contoso-paths/pathRules/old-blog",
        "rewriteRuleSet"
    ));
    assert!(reported(
        &import,
        Kind::ToDo,
        "sslCertificates/contoso-cert",
        "az keyvault secret download --id https://contoso-kv.vault.azure.net/secrets/contoso-cert"
    ));
    assert_eq!(import.report.of(Kind::Unresolved).count(), 0);
    assert!(
        import.toml.contains("#   - sku: SKU and capacity"),
        "the report heads the file"
    );

    // Only the certificate placeholders stand between the file and a passing check.
    let errors = config::from_toml(&import.toml, "full.toml", Path::new("."))
        .expect_err("placeholders are not PEM files");
    assert_eq!(errors.len(), 2, "{errors}");
    assert!(
        errors.iter().all(|e| e.problem.contains(PLACEHOLDER)),
        "{errors}"
    );
    let filled = import
        .toml
        .replace("CHANGE-ME/contoso-cert.pem", &example_cert("example.crt"))
        .replace("CHANGE-ME/contoso-cert.key", &example_cert("example.key"));
    let config = config::from_toml(&filled, "full.toml", Path::new(".")).expect("valid");
    assert_eq!(
        config.summary(),
        "2 listeners on 2 binds, 2 pools, 2 backend settings, 2 rules, 1 probe"
    );
}

#[test]
fn az_export_needs_nothing_filled_in() {
    let import = import_text(EXPORT);
    assert_eq!(import.report.of(Kind::ToDo).count(), 0);
    assert_eq!(import.report.of(Kind::Unresolved).count(), 0);
    assert_eq!(
        import.report.of(Kind::Ignored).count(),
        0,
        "{}",
        import.report.to_text()
    );
    let settings = &import.imported.settings[0].raw;
    assert_eq!((settings.port, settings.connection_draining), (65002, None));
    let config = config::from_toml(&import.toml, "export.toml", Path::new(".")).expect("valid");
    assert_eq!(
        config.summary(),
        "1 listener on 1 bind, 1 pool, 1 backend settings, 1 rule, 0 probes"
    );
}

#[test]
fn output_is_toml_the_gateway_reads_back() {
    for text in [SEED, FULL, EXPORT] {
        let import = import_text(text);
        let table: toml::Table = toml::from_str(&import.toml).expect("valid TOML");
        assert!(table.contains_key("listeners"));
        // Redirects are written inline, as the example writes them.
        assert!(!import.toml.contains("[rules.redirect]"));
    }
}

#[test]
fn bad_input_is_refused() {
    use crate::{import, Options};
    let options = Options {
        bind_ip: "0.0.0.0".parse().expect("an IP"),
    };
    let not_json = import("{ \"httpListeners\": [ ", "x.json", &options).expect_err("not JSON");
    assert!(not_json.contains("not JSON"), "{not_json}");
    let other = import(
        r#"{"resources": [{"type": "Microsoft.Web/sites"}]}"#,
        "x.json",
        &options,
    )
    .expect_err("no gateway");
    assert!(other.contains("no application gateway found"), "{other}");
    let empty = import(
        r#"{"type": "Microsoft.Network/applicationGateways", "name": "gw"}"#,
        "x.json",
        &options,
    )
    .expect_err("no collections");
    assert!(empty.contains("none of the collections"), "{empty}");
}

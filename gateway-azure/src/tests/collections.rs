//! Each collection's conversion on small inputs, and the report of what is left behind.

use serde_json::json;

use super::{id, import_json, reported};
use crate::{
    convert::{redirect_status, PLACEHOLDER, SEE_OTHER_STATUS},
    report::Kind,
};
use gateway_config::model::{Protocol, RuleKind};

#[test]
fn listeners_take_port_hosts_and_case_insensitive_keys() {
    let import = import_json(json!({
        "FrontendPorts": [{"Name": "p", "Properties": {"Port": "8443"}}],
        "HttpListeners": [
            {"name": "site", "properties": {
                "FrontendPort": id("frontendPorts", "p"),
                "Protocol": "HTTP",
                "HostName": "a.example.com",
                "HostNames": ["b.example.com", "A.example.com"],
                "sslProfile": id("sslProfiles", "strict"),
                "someNewField": "x"
            }},
            {"name": "tcp", "properties": {"frontendPort": id("frontendPorts", "p"), "protocol": "Tcp"}}
        ]
    }));
    let listeners = &import.imported.listeners;
    assert_eq!(listeners.len(), 1, "the Tcp listener is left out");
    let site = &listeners[0].raw;
    assert_eq!(
        (site.bind.as_str(), site.protocol),
        ("0.0.0.0:8443", Protocol::Http)
    );
    assert_eq!(
        site.host_names,
        Some(vec!["a.example.com".to_owned(), "b.example.com".to_owned()])
    );
    assert!(reported(
        &import,
        Kind::NotCarried,
        "httpListeners/tcp",
        "protocol \"Tcp\""
    ));
    assert!(reported(
        &import,
        Kind::NotCarried,
        "httpListeners/site",
        "sslProfile: SSL profiles"
    ));
    // A field we do not know is named, as the input spelled it.
    assert!(reported(
        &import,
        Kind::Ignored,
        "httpListeners/site",
        "someNewField = \"x\""
    ));
}

#[test]
fn https_listener_certificates_become_placeholders() {
    let import = import_json(json!({
        "frontendPorts": [{"name": "p", "properties": {"port": 443}}],
        "sslCertificates": [
            {"name": "pfx", "properties": {"data": "MIIK...", "password": "secret"}},
            {"name": "exported", "properties": {"publicCertData": "MIIF..."}}
        ],
        "httpListeners": [
            {"name": "a", "properties": {"frontendPort": id("frontendPorts", "p"), "protocol": "Https",
                                          "sslCertificate": id("sslCertificates", "pfx"), "hostNames": ["a.test"]}},
            {"name": "b", "properties": {"frontendPort": id("frontendPorts", "p"), "protocol": "Https",
                                          "sslCertificate": id("sslCertificates", "exported"), "hostNames": ["b.test"]}},
            {"name": "c", "properties": {"frontendPort": id("frontendPorts", "p"), "protocol": "Https"}}
        ]
    }));
    let raw = |i: usize| &import.imported.listeners[i].raw;
    assert_eq!(raw(0).certificate.as_deref(), Some("CHANGE-ME/pfx.pem"));
    assert_eq!(raw(0).private_key.as_deref(), Some("CHANGE-ME/pfx.key"));
    assert_eq!(
        raw(2).certificate.as_deref(),
        Some("CHANGE-ME/c.pem"),
        "named after the listener"
    );
    assert!(reported(
        &import,
        Kind::ToDo,
        "sslCertificates/pfx",
        "base64 PFX data"
    ));
    assert!(reported(
        &import,
        Kind::ToDo,
        "sslCertificates/exported",
        "never the private key"
    ));
    assert!(reported(
        &import,
        Kind::ToDo,
        "httpListeners/c",
        "not in the input"
    ));
    // The password is the certificate's, not a field left behind.
    assert_eq!(
        import.report.of(Kind::Ignored).count(),
        0,
        "{}",
        import.report.to_text()
    );
}

#[test]
fn pools_take_ips_and_names_and_say_when_empty() {
    let import = import_json(json!({"backendAddressPools": [
        {"name": "mixed", "properties": {"backendAddresses": [
            {"ipAddress": "10.0.0.4"}, {"fqdn": "app.internal"}, {}
        ]}},
        {"name": "nics", "properties": {"backendIPConfigurations": [{"id": "/x/nic1/ipConfigurations/c"}]}}
    ]}));
    let pools = &import.imported.pools;
    assert_eq!(pools[0].raw.addresses, ["10.0.0.4", "app.internal"]);
    assert!(reported(
        &import,
        Kind::ToDo,
        "backendAddressPools/mixed",
        "backendAddresses[2] has neither"
    ));
    assert!(pools[1].raw.addresses.is_empty());
    assert!(reported(
        &import,
        Kind::ToDo,
        "backendAddressPools/nics",
        "network interfaces"
    ));
}

#[test]
fn settings_map_every_field() {
    let import = import_json(json!({
        "probes": [{"name": "hp", "properties": {"protocol": "Https", "path": "/", "pickHostNameFromBackendHttpSettings": true}}],
        "trustedRootCertificates": [{"name": "root", "properties": {"data": "MIIDdz..."}}],
        "backendHttpSettingsCollection": [
            {"name": "plain", "properties": {"port": 80, "protocol": "Http", "cookieBasedAffinity": "Disabled",
                                              "affinityCookieName": "Ignored", "connectionDraining": {"enabled": false, "drainTimeoutInSec": 60},
                                              "path": "/app/", "probeEnabled": true}},
            {"name": "tls", "properties": {"port": 443, "protocol": "Https", "cookieBasedAffinity": "Enabled",
                                            "requestTimeout": 45, "connectionDraining": {"enabled": "true", "drainTimeoutInSec": "90"},
                                            "hostName": "app.example.com", "pickHostNameFromBackendAddress": true,
                                            "probe": id("probes", "hp"), "trustedRootCertificates": [id("trustedRootCertificates", "root")]}},
            {"name": "noport", "properties": {"protocol": "Https"}}
        ]
    }));
    let settings = |i: usize| &import.imported.settings[i].raw;
    let plain = settings(0);
    assert_eq!((plain.port, plain.protocol), (80, Protocol::Http));
    assert_eq!(plain.cookie_affinity, None);
    assert_eq!(
        plain.affinity_cookie_name, None,
        "no cookie name without affinity"
    );
    assert_eq!(
        (plain.connection_draining, plain.draining_timeout_secs),
        (None, None)
    );
    assert!(reported(
        &import,
        Kind::NotCarried,
        "backendHttpSettingsCollection/plain",
        "path \"/app/\""
    ));

    let tls = settings(1);
    assert_eq!((tls.port, tls.protocol), (443, Protocol::Https));
    assert_eq!(
        (tls.cookie_affinity, tls.affinity_cookie_name.as_deref()),
        (Some(true), None)
    );
    assert_eq!(tls.request_timeout_secs, Some(45));
    assert_eq!(
        (tls.connection_draining, tls.draining_timeout_secs),
        (Some(true), Some(90))
    );
    // Azure lets pickHostNameFromBackendAddress win over hostName; ours takes one of them.
    assert_eq!(
        (
            tls.host_header.as_deref(),
            tls.pick_host_name_from_backend_address
        ),
        (None, Some(true))
    );
    assert_eq!(tls.probe.as_deref(), Some("hp"));
    assert_eq!(tls.trusted_ca.as_deref(), Some("CHANGE-ME/root.pem"));
    assert!(reported(
        &import,
        Kind::ToDo,
        "backendHttpSettingsCollection/tls",
        "base64 data"
    ));

    assert_eq!(settings(2).port, 443, "the protocol's port, reported");
    assert!(reported(
        &import,
        Kind::ToDo,
        "backendHttpSettingsCollection/noport",
        "port is missing"
    ));
}

#[test]
fn probes_map_every_field() {
    let import = import_json(json!({"probes": [
        {"name": "p", "properties": {"protocol": "Http", "host": "h.internal", "path": "/health",
                                      "interval": 30, "timeout": 30.0, "unhealthyThreshold": 2,
                                      "match": {"statusCodes": ["200", "300-301"], "body": ""},
                                      "minServers": 1, "port": 8080}},
        {"name": "q", "properties": {"protocol": "Https", "host": "h", "pickHostNameFromBackendHttpSettings": true}}
    ]}));
    let p = &import.imported.probes[0].raw;
    assert_eq!(
        (p.protocol, p.host.as_deref(), p.path.as_deref()),
        (Protocol::Http, Some("h.internal"), Some("/health"))
    );
    assert_eq!(
        (p.interval_secs, p.timeout_secs, p.unhealthy_threshold),
        (Some(30), Some(30), Some(2))
    );
    assert_eq!(
        p.match_status_codes,
        Some(vec!["200".to_owned(), "300-301".to_owned()])
    );
    assert_eq!(p.match_body, None, "an empty body matches anything");
    assert!(reported(
        &import,
        Kind::NotCarried,
        "probes/p",
        "minServers 1"
    ));
    assert!(reported(&import, Kind::NotCarried, "probes/p", "port 8080"));
    let q = &import.imported.probes[1].raw;
    assert_eq!(
        (q.host.as_deref(), q.pick_host_name_from_backend_settings),
        (None, Some(true))
    );
}

#[test]
fn redirect_types_map_to_statuses() {
    assert_eq!(redirect_status("Permanent"), Some(301));
    assert_eq!(redirect_status("found"), Some(302));
    assert_eq!(redirect_status("SeeOther"), Some(SEE_OTHER_STATUS));
    assert_eq!(SEE_OTHER_STATUS, 302, "303 is not sent: 302 is the nearest");
    assert_eq!(redirect_status("Temporary"), Some(307));
    assert_eq!(redirect_status("Moved"), None);
}

/// A listener per name on port 80, each with a rule from `rules`.
fn with_rules(
    rules: serde_json::Value,
    redirects: serde_json::Value,
    maps: serde_json::Value,
) -> crate::Import {
    import_json(json!({
        "frontendPorts": [{"name": "p80", "properties": {"port": 80}}, {"name": "p443", "properties": {"port": 443}}],
        "httpListeners": [
            {"name": "l1", "properties": {"frontendPort": id("frontendPorts", "p80"), "protocol": "Http"}},
            {"name": "l2", "properties": {"frontendPort": id("frontendPorts", "p443"), "protocol": "Http"}},
            {"name": "l3", "properties": {"frontendPort": id("frontendPorts", "p80"), "protocol": "Ftp"}}
        ],
        "backendAddressPools": [{"name": "pool", "properties": {"backendAddresses": [{"ipAddress": "10.0.0.1"}]}}],
        "backendHttpSettingsCollection": [{"name": "set", "properties": {"port": 80, "protocol": "Http"}}],
        "redirectConfigurations": redirects,
        "urlPathMaps": maps,
        "requestRoutingRules": rules
    }))
}

#[test]
fn redirects_carry_target_status_and_azure_defaults() {
    let import = with_rules(
        json!([
            {"name": "r1", "properties": {"ruleType": "Basic", "priority": 1, "httpListener": id("httpListeners", "l1"),
                                           "redirectConfiguration": id("redirectConfigurations", "to-l2")}},
            {"name": "r2", "properties": {"ruleType": "Basic", "priority": 2, "httpListener": id("httpListeners", "l2"),
                                           "redirectConfiguration": id("redirectConfigurations", "see-other")}}
        ]),
        json!([
            {"name": "to-l2", "properties": {"redirectType": "Temporary", "targetListener": id("httpListeners", "l2")}},
            {"name": "see-other", "properties": {"redirectType": "SeeOther", "targetUrl": "https://example.com/x",
                                                  "includePath": true, "includeQueryString": "false"}}
        ]),
        json!([]),
    );
    let rules = &import.imported.rules;
    let first = rules[0].raw.rule.redirect.as_ref().expect("redirect");
    assert_eq!(rules[0].raw.rule.kind, RuleKind::Redirect);
    assert_eq!(
        (first.target_listener.as_deref(), first.status),
        (Some("l2"), Some(307))
    );
    // Azure includes neither unless told; ours would, so both are written.
    assert_eq!(
        (first.include_path, first.include_query),
        (Some(false), Some(false))
    );
    let second = rules[1].raw.rule.redirect.as_ref().expect("redirect");
    assert_eq!(
        (second.target_url.as_deref(), second.status),
        (Some("https://example.com/x"), Some(302))
    );
    assert_eq!(
        (second.include_path, second.include_query),
        (Some(true), Some(false))
    );
    assert!(reported(
        &import,
        Kind::Changed,
        "redirectConfigurations/see-other",
        "SeeOther (303) is sent as 302"
    ));
}

#[test]
fn path_maps_become_path_rules() {
    let import = with_rules(
        json!([{"name": "paths", "properties": {"ruleType": "PathBasedRouting", "httpListener": id("httpListeners", "l1"),
                                                "urlPathMap": id("urlPathMaps", "map")}}]),
        json!([{"name": "away", "properties": {"redirectType": "Found", "targetUrl": "https://elsewhere.test/"}}]),
        json!([{"name": "map", "properties": {
            "defaultRedirectConfiguration": id("redirectConfigurations", "away"),
            "pathRules": [
                {"name": "api rule", "properties": {"paths": ["/api/*", "/v1"], "backendAddressPool": id("backendAddressPools", "pool"),
                                                     "backendHttpSettings": id("backendHttpSettingsCollection", "set")}},
                {"name": "gone", "properties": {"paths": ["/old/*"], "backendAddressPool": id("backendAddressPools", "nowhere"),
                                                 "backendHttpSettings": id("backendHttpSettingsCollection", "set")}}
            ]
        }}]),
    );
    let rule = &import.imported.rules[0].raw;
    assert_eq!(rule.rule.kind, RuleKind::PathBased);
    let default = rule
        .rule
        .default_redirect
        .as_ref()
        .expect("a default redirect");
    assert_eq!(
        default.target_url.as_deref(),
        Some("https://elsewhere.test/")
    );
    assert_eq!(rule.rule.default_backend_pool, None);
    let api = &rule.path_rules[0].raw;
    assert_eq!(
        (api.name.as_str(), api.paths.as_slice()),
        (
            "api-rule",
            ["/api/*".to_owned(), "/v1".to_owned()].as_slice()
        )
    );
    assert_eq!(
        (api.backend_pool.as_deref(), api.backend_settings.as_deref()),
        (Some("pool"), Some("set"))
    );
    // A missing pool is named as the reference names it, and reported.
    assert_eq!(
        rule.path_rules[1].raw.backend_pool.as_deref(),
        Some("nowhere")
    );
    assert!(reported(
        &import,
        Kind::Unresolved,
        "urlPathMaps/map/pathRules/gone",
        "backendAddressPools/nowhere is not in the input"
    ));
    assert!(reported(
        &import,
        Kind::Changed,
        "urlPathMaps/map",
        "without case"
    ));
}

#[test]
fn rules_of_left_out_listeners_and_unknown_types_are_left_out() {
    let import = with_rules(
        json!([
            {"name": "ftp", "properties": {"ruleType": "Basic", "httpListener": id("httpListeners", "l3"),
                                            "backendAddressPool": id("backendAddressPools", "pool"),
                                            "backendHttpSettings": id("backendHttpSettingsCollection", "set")}},
            {"name": "odd", "properties": {"ruleType": "Weighted", "httpListener": id("httpListeners", "l1")}},
            {"name": "ok", "properties": {"httpListener": id("httpListeners", "l2"),
                                           "backendAddressPool": id("backendAddressPools", "pool"),
                                           "backendHttpSettings": id("backendHttpSettingsCollection", "set"),
                                           "rewriteRuleSet": id("rewriteRuleSets", "headers")}},
            {"name": "no-listener", "properties": {"ruleType": "Basic"}}
        ]),
        json!([]),
        json!([]),
    );
    let names: Vec<&str> = import
        .imported
        .rules
        .iter()
        .map(|r| r.raw.rule.name.as_str())
        .collect();
    assert_eq!(names, ["ok", "no-listener"]);
    assert!(reported(
        &import,
        Kind::NotCarried,
        "requestRoutingRules/ftp",
        "left out with its listener"
    ));
    assert!(reported(
        &import,
        Kind::NotCarried,
        "requestRoutingRules/odd",
        "ruleType \"Weighted\""
    ));
    assert!(reported(
        &import,
        Kind::NotCarried,
        "requestRoutingRules/ok",
        "rewrites are not supported"
    ));
    assert_eq!(import.imported.rules[1].raw.rule.listener, PLACEHOLDER);
}

#[test]
fn references_into_the_wrong_collection_or_naming_nothing_are_reported() {
    let import = with_rules(
        json!([{"name": "r", "properties": {"httpListener": id("httpListeners", "l1"),
                                             "backendAddressPool": id("backendHttpSettingsCollection", "set"),
                                             "backendHttpSettings": {"id": "[parameters('settingsId')]"}}}]),
        json!([]),
        json!([]),
    );
    let rule = &import.imported.rules[0].raw.rule;
    assert_eq!(
        (
            rule.backend_pool.as_deref(),
            rule.backend_settings.as_deref()
        ),
        (None, None)
    );
    let at = "requestRoutingRules/r";
    assert!(reported(
        &import,
        Kind::Unresolved,
        at,
        "points to backendHttpSettingsCollection/set, not into backendAddressPools"
    ));
    assert!(reported(
        &import,
        Kind::Unresolved,
        at,
        "names no <collection>/<name>"
    ));
}

#[test]
fn gateway_level_features_are_reported_once_each() {
    let import = import_json(json!({
        "sku": {"name": "WAF_v2", "tier": "WAF_v2", "capacity": 2},
        "firewallPolicy": {"id": "/x/policy"},
        "sslPolicy": {"policyType": "Predefined"},
        "trustedClientCertificates": [{"name": "ca"}],
        "customErrorConfigurations": [],
        "enableHttp2": false,
        "someFutureSetting": {"on": true},
        "provisioningState": "Succeeded",
        "location": "westeurope",
        "frontendPorts": [{"name": "p", "properties": {"port": 80}}]
    }));
    let text = import.report.to_text();
    for feature in [
        "sku:",
        "firewallPolicy:",
        "sslPolicy:",
        "trustedClientCertificates:",
    ] {
        assert!(
            reported(&import, Kind::NotCarried, "", feature),
            "{feature}:\n{text}"
        );
    }
    assert!(
        reported(
            &import,
            Kind::Ignored,
            "",
            "someFutureSetting = {\"on\":true}"
        ),
        "{text}"
    );
    // Blank, read-only and resource fields say nothing.
    for quiet in [
        "customErrorConfigurations",
        "enableHttp2",
        "provisioningState",
        "location",
    ] {
        assert!(!text.contains(quiet), "{quiet}:\n{text}");
    }
}

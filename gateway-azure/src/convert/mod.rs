//! Azure's objects → the raw structs of our configuration file, one collection at a time,
//! with every reference followed through [`Index`] and everything not carried over written
//! to the [`Report`].
//!
//! | Azure | ours |
//! |---|---|
//! | `httpListeners` + `frontendPorts` (+ `frontendIPConfigurations`) | `[[listeners]]`, `bind = "<--bind-ip>:<port>"` |
//! | `sslCertificates` | `certificate`/`private_key` placeholders `CHANGE-ME/<name>.pem/.key` |
//! | `backendAddressPools` | `[[backend_pools]]` |
//! | `backendHttpSettingsCollection` (+ `trustedRootCertificates`) | `[[backend_settings]]` |
//! | `requestRoutingRules` + `urlPathMaps` + `redirectConfigurations` | `[[rules]]` with `[[rules.path_rules]]` and inline redirects |
//! | `probes` | `[[probes]]` |

mod backends;
mod listeners;
mod names;
mod rules;
mod toplevel;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use serde_json::Value;

use super::{
    arm::{self, Gateway, Item, Loose, Other, SubResource},
    expr::{self, Scope},
    report::{Kind, Report},
    resolve::{Found, Index, RefError, Target},
};
use gateway_config::raw::{RawListener, RawPathRule, RawPool, RawProbe, RawRule, RawSettings};
use names::{sanitize, Namer};
#[cfg(test)]
pub use rules::{redirect_status, SEE_OTHER_STATUS};

/// How deep template variables may refer to each other.
const EXPRESSION_DEPTH: u8 = 8;

/// Stands for a value the operator must provide.
pub const PLACEHOLDER: &str = "CHANGE-ME";

/// Choices of the operator (`gateway import-azure` flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// The address every listener binds, with its frontend port (Azure binds its frontend
    /// IPs, which this host does not have).
    pub bind_ip: IpAddr,
}

/// One object of the generated file and the Azure object it comes from.
#[derive(Clone, Debug)]
pub struct Out<T> {
    /// e.g. `httpListeners/appGatewayHttpListener`.
    pub from: String,
    pub raw: T,
}

/// A rule and its path rules (which [`RawRule`] holds in a form only the reader builds).
#[derive(Clone, Debug)]
pub struct RuleOut {
    pub rule: RawRule,
    pub path_rules: Vec<Out<RawPathRule>>,
}

/// The generated configuration.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    pub listeners: Vec<Out<RawListener>>,
    pub pools: Vec<Out<RawPool>>,
    pub settings: Vec<Out<RawSettings>>,
    pub rules: Vec<Out<RuleOut>>,
    pub probes: Vec<Out<RawProbe>>,
}

/// Converts `gateway`; `scope` evaluates template expressions.
pub fn convert(
    gateway: &Gateway,
    scope: &dyn Scope,
    options: &Options,
    report: &mut Report,
) -> Imported {
    let mut cx = Ctx {
        gw: gateway,
        scope,
        options,
        report,
        index: Index::default(),
        skipped_listeners: HashSet::new(),
        frontend_users: HashMap::new(),
        certificates_reported: HashSet::new(),
    };
    cx.register_names();
    let imported = Imported {
        listeners: listeners::convert(&mut cx),
        pools: backends::pools(&mut cx),
        settings: backends::settings(&mut cx),
        rules: rules::convert(&mut cx),
        probes: backends::probes(&mut cx),
    };
    toplevel::report_rest(&mut cx);
    imported
}

/// Where a reference led.
#[derive(Clone, Debug)]
enum Link {
    Found(Found),
    /// To an object the input does not define (reported): its name, to write as is.
    Missing(String),
    /// Nowhere: no reference, or one that names nothing (reported).
    None,
}

impl Link {
    /// The name to write: the object's, or the one the reference gave.
    fn name(&self) -> Option<String> {
        match self {
            Self::Found(found) => Some(found.ours.clone()),
            Self::Missing(name) => Some(name.clone()),
            Self::None => None,
        }
    }
}

/// The state of one conversion.
struct Ctx<'a> {
    gw: &'a Gateway,
    scope: &'a dyn Scope,
    options: &'a Options,
    report: &'a mut Report,
    index: Index,
    /// Positions of listeners left out; their rules are left out too.
    skipped_listeners: HashSet<usize>,
    /// Positions of frontend IP configurations → the listeners using them.
    frontend_users: HashMap<usize, Vec<String>>,
    /// Certificates whose export has been explained.
    certificates_reported: HashSet<String>,
}

/// Fields every Azure object may carry that say nothing about its behaviour.
const METADATA: [&str; 7] = [
    "name",
    "id",
    "etag",
    "type",
    "provisioningstate",
    "resourceguid",
    "resourcegroup",
];

/// Back-references Azure keeps in an object to the objects using it: not behaviour.
const USED_BY: [&str; 7] = [
    "httplisteners",
    "listeners",
    "requestroutingrules",
    "urlpathmaps",
    "pathrules",
    "backendhttpsettings",
    "frontendports",
];

impl Ctx<'_> {
    fn add(&mut self, kind: Kind, at: &str, what: impl Into<String>) {
        self.report.add(kind, at, what);
    }

    /// Names every object: Azure's (evaluated) where valid, else the nearest valid one,
    /// reported for the kinds of object the file holds.
    fn register_names(&mut self) {
        let gw = self.gw;
        self.register(arm::HTTP_LISTENERS, &gw.http_listeners, Some("listener"));
        self.register(
            arm::BACKEND_ADDRESS_POOLS,
            &gw.backend_address_pools,
            Some("pool"),
        );
        self.register(
            arm::BACKEND_HTTP_SETTINGS,
            &gw.backend_http_settings,
            Some("settings"),
        );
        self.register(
            arm::REQUEST_ROUTING_RULES,
            &gw.request_routing_rules,
            Some("rule"),
        );
        self.register(arm::PROBES, &gw.probes, Some("probe"));
        self.register(
            arm::FRONTEND_IP_CONFIGURATIONS,
            &gw.frontend_ip_configurations,
            None,
        );
        self.register(arm::FRONTEND_PORTS, &gw.frontend_ports, None);
        self.register(arm::SSL_CERTIFICATES, &gw.ssl_certificates, None);
        self.register(
            arm::TRUSTED_ROOT_CERTIFICATES,
            &gw.trusted_root_certificates,
            None,
        );
        self.register(arm::URL_PATH_MAPS, &gw.url_path_maps, None);
        self.register(
            arm::REDIRECT_CONFIGURATIONS,
            &gw.redirect_configurations,
            None,
        );
    }

    /// Names the items of `collection`; renames are reported when `kind` (the file's word
    /// for them) is given.
    fn register<T>(&mut self, collection: &'static str, items: &[Item<T>], kind: Option<&str>) {
        let mut namer = Namer::default();
        for item in items {
            let evaluated = expr::evaluate(&item.name, self.scope, EXPRESSION_DEPTH);
            let azure = if evaluated.contains(expr::UNKNOWN) {
                item.name.clone()
            } else {
                evaluated
            };
            let fallback = format!("{}-{}", kind.unwrap_or("object"), item.index + 1);
            let ours = namer.unique(&sanitize(&azure, &fallback));
            self.index.add(collection, &azure, &ours);
            if kind.is_some() && ours != azure {
                let at = self.at(collection, self.index.len(collection) - 1, item.index);
                self.add(
                    Kind::Changed,
                    &at,
                    format!(
                        "named {ours:?} here (names are 1-80 letters, digits, '_', '.' or '-', \
                         unique per kind)"
                    ),
                );
            }
        }
    }

    /// `collection/<azure name>` of the item at `position` (`collection[index]` when it has
    /// no name), for the report.
    fn at(&self, collection: &'static str, position: usize, index: usize) -> String {
        match self.index.entry(collection, position) {
            Some((azure, _)) if !azure.is_empty() => format!("{collection}/{azure}"),
            _ => format!("{collection}[{index}]"),
        }
    }

    /// Our name of the item at `position` of `collection`.
    fn ours(&self, collection: &'static str, position: usize) -> String {
        self.index.entry(collection, position).map_or_else(
            || format!("{collection}-{position}"),
            |(_, ours)| ours.to_owned(),
        )
    }

    /// A string value, its template expression evaluated; `None` (reported) when it
    /// cannot be.
    fn text(&mut self, at: &str, field: &str, value: Option<&str>) -> Option<String> {
        let value = value?;
        let text = expr::evaluate(value, self.scope, EXPRESSION_DEPTH);
        if text.contains(expr::UNKNOWN) {
            self.add(
                Kind::ToDo,
                at,
                format!(
                    "{field} is the ARM expression {value:?}, which cannot be evaluated without \
                     deploying; left out"
                ),
            );
            return None;
        }
        Some(text)
    }

    fn loose_text(&mut self, at: &str, field: &str, value: Option<&Loose>) -> Option<String> {
        match value? {
            Loose::Bool(b) => Some(b.to_string()),
            Loose::Int(n) => Some(n.to_string()),
            Loose::Float(f) => Some(f.to_string()),
            Loose::Text(text) => self.text(at, field, Some(text)),
            Loose::Other(Value::Null) => None,
            Loose::Other(other) => {
                self.add(
                    Kind::ToDo,
                    at,
                    format!("{field} is {}, not a value; left out", arm::kind_of(other)),
                );
                None
            }
        }
    }

    /// A whole number; `None` (reported) when the value is something else.
    fn number(&mut self, at: &str, field: &str, value: Option<&Loose>) -> Option<u64> {
        let text = self.loose_text(at, field, value)?;
        let parsed = text.trim().parse::<u64>().ok().or_else(|| {
            let float = text.trim().parse::<f64>().ok()?;
            // Only floats that are whole numbers (`30.0`); `as` is exact for those.
            (float.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&float))
                .then_some(float as u64)
        });
        if parsed.is_none() {
            self.add(
                Kind::ToDo,
                at,
                format!("{field} {text:?} is not a whole number; left out"),
            );
        }
        parsed
    }

    /// A flag: `true`/`false`, or Azure's `Enabled`/`Disabled`.
    fn flag(&mut self, at: &str, field: &str, value: Option<&Loose>) -> Option<bool> {
        let text = self.loose_text(at, field, value)?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "enabled" => Some(true),
            "false" | "disabled" => Some(false),
            _ => {
                self.add(
                    Kind::ToDo,
                    at,
                    format!(
                        "{field} {text:?} is neither true/Enabled nor false/Disabled; left out"
                    ),
                );
                None
            }
        }
    }

    /// Follows the reference in `field` of the object `at` into `collection`; what cannot
    /// be followed is reported.
    fn follow(
        &mut self,
        at: &str,
        field: &str,
        reference: Option<&SubResource>,
        collection: &str,
    ) -> Link {
        let Some(id) = reference.and_then(|r| r.id.as_deref()) else {
            return Link::None;
        };
        let result = self.index.follow(id, collection, self.scope);
        let target = match &result {
            Ok(found) => Some(&found.target),
            Err(RefError::Missing(target)) => Some(target),
            Err(_) => None,
        };
        if let Some(Target {
            name,
            junk: Some(junk),
            ..
        }) = target
        {
            self.add(
                Kind::Input,
                at,
                format!(
                    "{field}: {junk:?} after the name {name:?} in the reference ignored (left \
                     over from an ARM expression)"
                ),
            );
        }
        match result {
            Ok(found) => Link::Found(found),
            Err(RefError::Missing(target)) => {
                let name = sanitize(&target.name, PLACEHOLDER);
                let what = RefError::Missing(target).describe();
                self.add(
                    Kind::Unresolved,
                    at,
                    format!("{field}: {what} (add it, or correct the reference)"),
                );
                Link::Missing(name)
            }
            Err(error) => {
                self.add(
                    Kind::Unresolved,
                    at,
                    format!("{field}: {}", error.describe()),
                );
                Link::None
            }
        }
    }

    /// Reports each field of `other` named in `features` (lowercased key, what is missing
    /// here) that carries a value as not carried over.
    fn not_carried(&mut self, at: &str, other: &Other, features: &[(&str, &str)]) {
        for (key, what) in features {
            if other.get(*key).is_some_and(|v| !arm::is_blank(v)) {
                let spelled = self.gw.spelling.of(key).to_owned();
                self.add(Kind::NotCarried, at, format!("{spelled}: {what}"));
            }
        }
    }

    /// Reports the fields of `other` that carry a value, except metadata, back-references
    /// and `silent` (fields handled elsewhere).
    fn ignored(&mut self, at: &str, other: &Other, silent: &[&str]) {
        for (key, value) in other {
            let key_str = key.as_str();
            if METADATA.contains(&key_str)
                || USED_BY.contains(&key_str)
                || silent.contains(&key_str)
            {
                continue;
            }
            if arm::is_blank(value) {
                continue;
            }
            let shown = short(value);
            let key = self.gw.spelling.of(key).to_owned();
            self.add(Kind::Ignored, at, format!("{key} = {shown}"));
        }
    }
}

/// `value` as compact JSON, cut to a readable length.
fn short(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        text
    } else {
        let cut: String = text.chars().take(MAX_CHARS).collect();
        format!("{cut}...")
    }
}

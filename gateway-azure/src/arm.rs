//! Azure's application gateway object model, as serde structs: read leniently, since
//! Azure writes it several ways. Property names are compared without case (templates
//! write `FrontendIPConfiguration`, `az` writes `frontendIpConfiguration`): every key is
//! lowercased before deserializing, and [`Spelling`] remembers how the input wrote it for
//! messages. Each object's `properties` are merged into the object (exports flatten them,
//! templates do not). Fields we do not read land in `other`, so the import can say which
//! were left behind; each object is read on its own, so one unreadable object is reported
//! and the others are still imported.

use std::collections::{BTreeMap, HashMap};

use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{Map, Value};

/// Fields of an object that were not read, by lowercased name.
pub type Other = BTreeMap<String, Value>;

/// `{ "id": "..." }`: a reference to another object.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubResource {
    pub id: Option<String>,
}

/// A number, flag or string as ARM writes it: a JSON value, a string holding one
/// (`"80"`, `"Enabled"`), or a template expression.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Loose {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Other(Value),
}

/// One element of a collection: its name, where it is, and what it holds.
#[derive(Clone, Debug)]
pub struct Item<T> {
    /// As written (possibly an expression); empty when the element has none.
    pub name: String,
    /// Position in its collection.
    pub index: usize,
    pub props: T,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FrontendIpConfiguration {
    #[serde(rename = "privateipaddress")]
    pub private_ip_address: Option<String>,
    #[serde(rename = "publicipaddress")]
    pub public_ip_address: Option<SubResource>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FrontendPort {
    pub port: Option<Loose>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpListener {
    #[serde(rename = "frontendipconfiguration")]
    pub frontend_ip_configuration: Option<SubResource>,
    #[serde(rename = "frontendport")]
    pub frontend_port: Option<SubResource>,
    pub protocol: Option<String>,
    #[serde(rename = "hostname")]
    pub host_name: Option<String>,
    #[serde(rename = "hostnames")]
    pub host_names: Option<Vec<String>>,
    #[serde(rename = "sslcertificate")]
    pub ssl_certificate: Option<SubResource>,
    #[serde(flatten)]
    pub other: Other,
}

/// `sslCertificates` and `trustedRootCertificates`: the certificate travels as data or
/// stays in Key Vault; either way it has to be exported to PEM by hand.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Certificate {
    pub data: Option<String>,
    #[serde(rename = "keyvaultsecretid")]
    pub key_vault_secret_id: Option<String>,
    #[serde(rename = "publiccertdata")]
    pub public_cert_data: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct BackendAddressPool {
    #[serde(rename = "backendaddresses")]
    pub backend_addresses: Option<Vec<BackendAddress>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct BackendAddress {
    #[serde(rename = "ipaddress")]
    pub ip_address: Option<String>,
    pub fqdn: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct BackendHttpSettings {
    pub port: Option<Loose>,
    pub protocol: Option<String>,
    #[serde(rename = "cookiebasedaffinity")]
    pub cookie_based_affinity: Option<Loose>,
    #[serde(rename = "affinitycookiename")]
    pub affinity_cookie_name: Option<String>,
    #[serde(rename = "requesttimeout")]
    pub request_timeout: Option<Loose>,
    #[serde(rename = "connectiondraining")]
    pub connection_draining: Option<ConnectionDraining>,
    #[serde(rename = "hostname")]
    pub host_name: Option<String>,
    #[serde(rename = "pickhostnamefrombackendaddress")]
    pub pick_host_name_from_backend_address: Option<Loose>,
    pub probe: Option<SubResource>,
    #[serde(rename = "trustedrootcertificates")]
    pub trusted_root_certificates: Option<Vec<SubResource>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectionDraining {
    pub enabled: Option<Loose>,
    #[serde(rename = "draintimeoutinsec")]
    pub drain_timeout_in_sec: Option<Loose>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestRoutingRule {
    #[serde(rename = "ruletype")]
    pub rule_type: Option<String>,
    pub priority: Option<Loose>,
    #[serde(rename = "httplistener")]
    pub http_listener: Option<SubResource>,
    #[serde(rename = "backendaddresspool")]
    pub backend_address_pool: Option<SubResource>,
    #[serde(rename = "backendhttpsettings")]
    pub backend_http_settings: Option<SubResource>,
    #[serde(rename = "urlpathmap")]
    pub url_path_map: Option<SubResource>,
    #[serde(rename = "redirectconfiguration")]
    pub redirect_configuration: Option<SubResource>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct UrlPathMap {
    #[serde(rename = "defaultbackendaddresspool")]
    pub default_backend_address_pool: Option<SubResource>,
    #[serde(rename = "defaultbackendhttpsettings")]
    pub default_backend_http_settings: Option<SubResource>,
    #[serde(rename = "defaultredirectconfiguration")]
    pub default_redirect_configuration: Option<SubResource>,
    /// Read one by one with [`items`], like the collections.
    #[serde(rename = "pathrules")]
    pub path_rules: Option<Vec<Value>>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PathRule {
    pub paths: Option<Vec<String>>,
    #[serde(rename = "backendaddresspool")]
    pub backend_address_pool: Option<SubResource>,
    #[serde(rename = "backendhttpsettings")]
    pub backend_http_settings: Option<SubResource>,
    #[serde(rename = "redirectconfiguration")]
    pub redirect_configuration: Option<SubResource>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Probe {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub interval: Option<Loose>,
    pub timeout: Option<Loose>,
    #[serde(rename = "unhealthythreshold")]
    pub unhealthy_threshold: Option<Loose>,
    #[serde(rename = "pickhostnamefrombackendhttpsettings")]
    pub pick_host_name_from_backend_http_settings: Option<Loose>,
    #[serde(rename = "match")]
    pub match_: Option<ProbeMatch>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProbeMatch {
    #[serde(rename = "statuscodes")]
    pub status_codes: Option<Vec<String>>,
    pub body: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RedirectConfiguration {
    #[serde(rename = "redirecttype")]
    pub redirect_type: Option<String>,
    #[serde(rename = "targetlistener")]
    pub target_listener: Option<SubResource>,
    #[serde(rename = "targeturl")]
    pub target_url: Option<String>,
    #[serde(rename = "includepath")]
    pub include_path: Option<Loose>,
    #[serde(rename = "includequerystring")]
    pub include_query_string: Option<Loose>,
    #[serde(flatten)]
    pub other: Other,
}

/// How the input spelled each key, by its lowercased form: for messages.
#[derive(Clone, Debug, Default)]
pub struct Spelling(HashMap<String, String>);

impl Spelling {
    /// `key` (lowercased) as the input first wrote it.
    pub fn of<'a>(&'a self, key: &'a str) -> &'a str {
        self.0.get(key).map_or(key, String::as_str)
    }
}

/// An application gateway's collections, each element read on its own.
#[derive(Clone, Debug, Default)]
pub struct Gateway {
    pub frontend_ip_configurations: Vec<Item<FrontendIpConfiguration>>,
    pub frontend_ports: Vec<Item<FrontendPort>>,
    pub http_listeners: Vec<Item<HttpListener>>,
    pub ssl_certificates: Vec<Item<Certificate>>,
    pub trusted_root_certificates: Vec<Item<Certificate>>,
    pub backend_address_pools: Vec<Item<BackendAddressPool>>,
    pub backend_http_settings: Vec<Item<BackendHttpSettings>>,
    pub request_routing_rules: Vec<Item<RequestRoutingRule>>,
    pub url_path_maps: Vec<Item<UrlPathMap>>,
    pub probes: Vec<Item<Probe>>,
    pub redirect_configurations: Vec<Item<RedirectConfiguration>>,
    /// The gateway's other properties (`sku`, `webApplicationFirewallConfiguration`, ...).
    pub other: Other,
    /// Elements that could not be read: (where, why).
    pub unreadable: Vec<(String, String)>,
    pub spelling: Spelling,
}

/// The collections this import reads, as ids and the input name them.
pub const FRONTEND_IP_CONFIGURATIONS: &str = "frontendIPConfigurations";
pub const FRONTEND_PORTS: &str = "frontendPorts";
pub const HTTP_LISTENERS: &str = "httpListeners";
pub const SSL_CERTIFICATES: &str = "sslCertificates";
pub const TRUSTED_ROOT_CERTIFICATES: &str = "trustedRootCertificates";
pub const BACKEND_ADDRESS_POOLS: &str = "backendAddressPools";
pub const BACKEND_HTTP_SETTINGS: &str = "backendHttpSettingsCollection";
pub const REQUEST_ROUTING_RULES: &str = "requestRoutingRules";
pub const URL_PATH_MAPS: &str = "urlPathMaps";
pub const PROBES: &str = "probes";
pub const REDIRECT_CONFIGURATIONS: &str = "redirectConfigurations";

/// Every collection [`Gateway`] reads.
pub const COLLECTIONS: [&str; 11] = [
    FRONTEND_IP_CONFIGURATIONS,
    FRONTEND_PORTS,
    HTTP_LISTENERS,
    SSL_CERTIFICATES,
    TRUSTED_ROOT_CERTIFICATES,
    BACKEND_ADDRESS_POOLS,
    BACKEND_HTTP_SETTINGS,
    REQUEST_ROUTING_RULES,
    URL_PATH_MAPS,
    PROBES,
    REDIRECT_CONFIGURATIONS,
];

/// Collections a reference may point into: those read, and those only reported.
pub const REFERABLE: &[&str] = &[
    FRONTEND_IP_CONFIGURATIONS,
    FRONTEND_PORTS,
    HTTP_LISTENERS,
    SSL_CERTIFICATES,
    TRUSTED_ROOT_CERTIFICATES,
    BACKEND_ADDRESS_POOLS,
    BACKEND_HTTP_SETTINGS,
    REQUEST_ROUTING_RULES,
    URL_PATH_MAPS,
    PROBES,
    REDIRECT_CONFIGURATIONS,
    "pathRules",
    "rewriteRuleSets",
    "sslProfiles",
    "authenticationCertificates",
    "trustedClientCertificates",
    "gatewayIPConfigurations",
    "listeners",
    "routingRules",
    "backendSettingsCollection",
];

impl Gateway {
    /// Reads the gateway's properties (collections at the top level of `properties`).
    pub fn read(properties: &Map<String, Value>) -> Self {
        let mut spelling = Spelling::default();
        let mut map = lowercase_object(properties.clone(), &mut spelling);
        let mut take = |name: &str| map.remove(&name.to_ascii_lowercase());
        let mut unreadable = Vec::new();
        let u = &mut unreadable;
        let mut gateway = Self {
            frontend_ip_configurations: items(
                FRONTEND_IP_CONFIGURATIONS,
                take(FRONTEND_IP_CONFIGURATIONS),
                u,
            ),
            frontend_ports: items(FRONTEND_PORTS, take(FRONTEND_PORTS), u),
            http_listeners: items(HTTP_LISTENERS, take(HTTP_LISTENERS), u),
            ssl_certificates: items(SSL_CERTIFICATES, take(SSL_CERTIFICATES), u),
            trusted_root_certificates: items(
                TRUSTED_ROOT_CERTIFICATES,
                take(TRUSTED_ROOT_CERTIFICATES),
                u,
            ),
            backend_address_pools: items(BACKEND_ADDRESS_POOLS, take(BACKEND_ADDRESS_POOLS), u),
            backend_http_settings: items(BACKEND_HTTP_SETTINGS, take(BACKEND_HTTP_SETTINGS), u),
            request_routing_rules: items(REQUEST_ROUTING_RULES, take(REQUEST_ROUTING_RULES), u),
            url_path_maps: items(URL_PATH_MAPS, take(URL_PATH_MAPS), u),
            probes: items(PROBES, take(PROBES), u),
            redirect_configurations: items(
                REDIRECT_CONFIGURATIONS,
                take(REDIRECT_CONFIGURATIONS),
                u,
            ),
            ..Self::default()
        };
        gateway.other = map.into_iter().collect();
        gateway.unreadable = unreadable;
        gateway.spelling = spelling;
        gateway
    }

    /// Whether the input held none of the collections this import reads.
    pub fn is_empty(&self) -> bool {
        self.frontend_ip_configurations.is_empty()
            && self.frontend_ports.is_empty()
            && self.http_listeners.is_empty()
            && self.ssl_certificates.is_empty()
            && self.trusted_root_certificates.is_empty()
            && self.backend_address_pools.is_empty()
            && self.backend_http_settings.is_empty()
            && self.request_routing_rules.is_empty()
            && self.url_path_maps.is_empty()
            && self.probes.is_empty()
            && self.redirect_configurations.is_empty()
    }
}

/// The elements of `collection` (an array, already lowercased), each read on its own;
/// those that cannot be read are added to `unreadable`.
pub fn items<T: DeserializeOwned>(
    collection: &str,
    value: Option<Value>,
    unreadable: &mut Vec<(String, String)>,
) -> Vec<Item<T>> {
    let elements = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(elements)) => elements,
        Some(other) => {
            unreadable.push((
                collection.to_owned(),
                format!("expected an array, found {}", kind_of(&other)),
            ));
            return Vec::new();
        }
    };
    let mut items = Vec::new();
    for (index, element) in elements.into_iter().enumerate() {
        let Value::Object(mut object) = element else {
            unreadable.push((
                format!("{collection}[{index}]"),
                format!("expected an object, found {}", kind_of(&element)),
            ));
            continue;
        };
        // `properties` merged in; what is next to it (`name`, `id`, `etag`) stays.
        if let Some(Value::Object(properties)) = object.remove("properties") {
            object.extend(properties);
        }
        let name = match object.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => String::new(),
        };
        match T::deserialize(Value::Object(object)) {
            Ok(props) => items.push(Item { name, index, props }),
            Err(error) => {
                let at = if name.is_empty() {
                    format!("{collection}[{index}]")
                } else {
                    format!("{collection}/{name}")
                };
                unreadable.push((at, error.to_string()));
            }
        }
    }
    items
}

/// `map` with every object key in it lowercased, recording the first spelling of each.
pub fn lowercase_object(map: Map<String, Value>, spelling: &mut Spelling) -> Map<String, Value> {
    map.into_iter()
        .map(|(key, value)| {
            let lower = key.to_ascii_lowercase();
            spelling.0.entry(lower.clone()).or_insert(key);
            (lower, lowercase_keys(value, spelling))
        })
        .collect()
}

fn lowercase_keys(value: Value, spelling: &mut Spelling) -> Value {
    match value {
        Value::Object(map) => Value::Object(lowercase_object(map, spelling)),
        Value::Array(values) => Value::Array(
            values
                .into_iter()
                .map(|v| lowercase_keys(v, spelling))
                .collect(),
        ),
        other => other,
    }
}

/// "a string", "an array", ... for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `value` says nothing: null, false, "", [] or {}. Such fields are not worth
/// reporting as left behind.
pub fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(true) | Value::Number(_) => false,
    }
}

//! Where the application gateway is in the input: a resource of an ARM template
//! (`resources[]`, nested deployments included), a resource as the REST API returns it
//! (`properties` holding the collections), `az network application-gateway show` output
//! (the collections at the top level), a list of those, or a bare fragment of collections.

use serde_json::{Map, Value};

use super::expr::{self, Scope};

/// The resource type of an application gateway.
const GATEWAY_TYPE: &str = "Microsoft.Network/applicationGateways";

/// The gateway found, and the template around it.
#[derive(Debug)]
pub struct Source {
    /// The object holding the collections.
    pub properties: Map<String, Value>,
    /// The resource's name (evaluated when it is an expression), if it has one.
    pub name: Option<String>,
    /// What the input was, in words, for the report.
    pub shape: &'static str,
    /// Parameters and variables of the template, when the input is one.
    pub template: Template,
    /// What else the input held that was not imported (other gateways).
    pub notes: Vec<String>,
}

/// `parameters` (their `defaultValue`) and `variables` of an ARM template.
#[derive(Clone, Debug, Default)]
pub struct Template {
    parameters: Map<String, Value>,
    variables: Map<String, Value>,
}

impl Template {
    fn of(root: &Map<String, Value>) -> Self {
        let object = |key: &str| match get(root, key) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Self {
            parameters: object("parameters"),
            variables: object("variables"),
        }
    }
}

/// Strings and numbers as text; anything else (objects, arrays) is not a value we use.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Scope for Template {
    fn parameter(&self, name: &str) -> Option<String> {
        match get(&self.parameters, name)? {
            Value::Object(parameter) => scalar(get(parameter, "defaultValue")?),
            _ => None,
        }
    }

    fn variable(&self, name: &str) -> Option<String> {
        scalar(get(&self.variables, name)?)
    }
}

/// `key` of `map`, compared without case.
pub fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Whether `map` holds at least one collection of an application gateway.
fn has_collections(map: &Map<String, Value>) -> bool {
    super::arm::COLLECTIONS
        .iter()
        .any(|collection| get(map, collection).is_some())
}

/// The application gateway in `root`; the error says what the input was instead.
pub fn locate(root: &Value) -> Result<Source, String> {
    let template = match root {
        Value::Object(map) => Template::of(map),
        _ => Template::default(),
    };
    let mut found = Vec::new();
    find_gateways(root, &mut found);
    if let Some((first, rest)) = found.split_first() {
        let name = get(first, "name")
            .and_then(Value::as_str)
            .map(|name| expr::evaluate(name, &template, 8))
            .filter(|name| !name.contains(expr::UNKNOWN));
        let properties = match get(first, "properties") {
            Some(Value::Object(properties)) if has_collections(properties) => properties.clone(),
            _ => (*first).clone(),
        };
        let mut notes = Vec::new();
        if !rest.is_empty() {
            notes.push(format!(
                "the input holds {} application gateways; only the first was imported",
                found.len()
            ));
        }
        let shape = if matches!(root, Value::Object(map) if get(map, "resources").is_some()) {
            "an ARM template"
        } else if matches!(root, Value::Array(_)) {
            "a list of application gateways"
        } else {
            "an application gateway resource"
        };
        return Ok(Source {
            properties,
            name,
            shape,
            template,
            notes,
        });
    }
    match root {
        Value::Object(map) if has_collections(map) => Ok(Source {
            properties: map.clone(),
            name: get(map, "name").and_then(Value::as_str).map(str::to_owned),
            shape: "application gateway collections",
            template,
            notes: Vec::new(),
        }),
        Value::Object(map) => match get(map, "properties") {
            Some(Value::Object(properties)) if has_collections(properties) => Ok(Source {
                properties: properties.clone(),
                name: get(map, "name").and_then(Value::as_str).map(str::to_owned),
                shape: "an application gateway resource",
                template,
                notes: Vec::new(),
            }),
            _ => Err(format!(
                "no application gateway found: no resource of type {GATEWAY_TYPE}, and none of \
                 its collections ({}) at the top level or in `properties`",
                super::arm::COLLECTIONS.join(", ")
            )),
        },
        other => Err(format!(
            "no application gateway found: the input is {}, not an object",
            super::arm::kind_of(other)
        )),
    }
}

/// Objects of type [`GATEWAY_TYPE`] anywhere in `value` (templates nest resources and
/// deployments), or that look like one (`az` output: `type` plus collections).
fn find_gateways<'a>(value: &'a Value, found: &mut Vec<&'a Map<String, Value>>) {
    match value {
        Value::Object(map) => {
            let is_gateway = get(map, "type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case(GATEWAY_TYPE));
            if is_gateway {
                found.push(map);
                return;
            }
            for value in map.values() {
                find_gateways(value, found);
            }
        }
        Value::Array(values) => {
            for value in values {
                find_gateways(value, found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_the_gateway_of_a_template() {
        let template = json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "parameters": {"gwName": {"type": "string", "defaultValue": "appgw"}},
            "resources": [
                {"type": "Microsoft.Network/publicIPAddresses", "name": "pip"},
                {"type": "Microsoft.Network/applicationGateways", "name": "[parameters('gwName')]",
                 "properties": {"frontendPorts": []}}
            ]
        });
        let source = locate(&template).expect("a gateway");
        assert_eq!(source.name.as_deref(), Some("appgw"));
        assert_eq!(source.shape, "an ARM template");
        assert!(source.properties.contains_key("frontendPorts"));
    }

    #[test]
    fn finds_collections_of_an_export_or_a_fragment() {
        let export = json!({"name": "gw", "type": "Microsoft.Network/applicationGateways",
                            "httpListeners": [], "backendAddressPools": []});
        assert!(locate(&export)
            .expect("az show output")
            .properties
            .contains_key("httpListeners"));
        let fragment = json!({"requestRoutingRules": []});
        assert_eq!(
            locate(&fragment).expect("a fragment").shape,
            "application gateway collections"
        );
        let rest = json!({"name": "gw", "properties": {"probes": []}});
        assert!(locate(&rest)
            .expect("a REST resource")
            .properties
            .contains_key("probes"));
    }

    #[test]
    fn says_what_the_input_was_instead() {
        let error = locate(&json!({"resources": [{"type": "Microsoft.Web/sites"}]}))
            .expect_err("no gateway");
        assert!(error.contains("no application gateway found"), "{error}");
        assert!(locate(&json!([1, 2])).is_err());
    }
}

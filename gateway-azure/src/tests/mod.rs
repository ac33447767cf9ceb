//! The import on the fixtures under `tests/fixtures/azure/` and, collection by collection,
//! on small inputs.

mod collections;
mod fixtures;

use std::net::{IpAddr, Ipv4Addr};

use super::{
    convert::Options,
    import,
    report::{Entry, Kind},
    Import,
};

/// Imports `text` with the default bind address; panics when the input is refused.
fn import_text(text: &str) -> Import {
    let options = Options {
        bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    import(text, "test.json", &options).unwrap_or_else(|error| panic!("import refused: {error}"))
}

/// Imports the gateway whose properties are `properties`.
fn import_json(properties: serde_json::Value) -> Import {
    import_text(&properties.to_string())
}

/// The report's entries of `kind` about `at`, as text.
fn entries(import: &Import, kind: Kind, at: &str) -> Vec<String> {
    import
        .report
        .of(kind)
        .filter(|e: &&Entry| e.at == at)
        .map(|e| e.what.clone())
        .collect()
}

/// Whether some entry of `kind` about `at` contains `text`.
fn reported(import: &Import, kind: Kind, at: &str, text: &str) -> bool {
    entries(import, kind, at)
        .iter()
        .any(|what| what.contains(text))
}

/// An id of the object `name` of `collection` of gateway `gw`.
fn id(collection: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "id": format!(
            "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Network/\
             applicationGateways/gw/{collection}/{name}"
        )
    })
}

/// Found by the `azure_import` fuzz target: names and field names from the input land in
/// the generated file's comments, where a line break or DEL made it not TOML (or, with a
/// line break, could have written a key of the input's choosing).
#[test]
fn names_with_control_characters_stay_inside_comments() {
    let import = import_json(serde_json::json!({
        "httpListeners": [{
            "name": "web\nadmin = \"0.0.0.0:1\"",
            "\u{7f}odd": 1,
        }],
    }));
    let table: toml::Table = import
        .toml
        .parse()
        .unwrap_or_else(|error| panic!("not TOML ({error}):\n{}", import.toml));
    assert!(!table.contains_key("admin"), "{}", import.toml);
    assert!(import.toml.contains("\\u{7f}odd"), "{}", import.toml);
}

//! TOML text → [`RawDocument`]. Each object (each listener, pool, rule, path rule, ...) is
//! deserialized on its own, so an unknown key or a wrong type in one of them is reported
//! with toml's own message, its key path and its line, and the other objects are still
//! read and validated.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use super::{
    error::ConfigError,
    lines::LineIndex,
    raw::{RawGlobal, RawListener, RawPathRule, RawPool, RawProbe, RawRule, RawSettings},
};

/// The top-level keys, as the fix of an unknown one lists them.
const TOP_LEVEL_KEYS: &str =
    "[global], [[listeners]], [[backend_pools]], [[backend_settings]], [[rules]], [[probes]]";

/// Where an object was written: the file (or the command line) and its key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    /// e.g. `listeners[1]`, `rules[0].path_rules[2]`, `--listen[0]`.
    pub key: String,
}

impl Origin {
    pub fn new(file: &Arc<str>, key: impl Into<String>) -> Self {
        Self {
            file: file.clone(),
            key: key.into(),
        }
    }

    /// The path of `field` in this object (`field` may be empty: the object itself).
    pub fn key_of(&self, field: &str) -> String {
        match field {
            "" => self.key.clone(),
            _ if field.starts_with('[') => format!("{}{field}", self.key),
            _ => format!("{}.{field}", self.key),
        }
    }

    /// A problem with `field` of this object.
    pub fn error(
        &self,
        field: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(&*self.file, self.key_of(field), problem, fix)
    }
}

/// One object: where it is, its `name` when one could be read (even if the object itself
/// could not be), and its contents unless they failed to deserialize (already reported).
#[derive(Clone, Debug)]
pub struct Element<T> {
    pub origin: Origin,
    pub name: Option<String>,
    pub raw: Option<T>,
    /// Key paths of keys that were wrong (and reported), left out of `raw`.
    pub skipped: Vec<String>,
}

/// `name` of `listeners[1].name` or `redirect` of `rules[0].redirect.status`, for the
/// object at `object_key`.
fn top_field<'k>(key: &'k str, object_key: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(object_key)?.strip_prefix('.')?;
    let end = rest.find(['.', '[']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|field| !field.is_empty())
}

/// Every object of a configuration, as written.
#[derive(Clone, Debug, Default)]
pub struct RawDocument {
    pub global: Option<Element<RawGlobal>>,
    pub listeners: Vec<Element<RawListener>>,
    pub backend_pools: Vec<Element<RawPool>>,
    pub backend_settings: Vec<Element<RawSettings>>,
    pub rules: Vec<Element<RawRule>>,
    pub probes: Vec<Element<RawProbe>>,
}

impl RawDocument {
    /// The key paths of every key left out because it was wrong (already reported).
    pub fn skipped(&self) -> Vec<&str> {
        fn of<T>(elements: &[Element<T>]) -> impl Iterator<Item = &str> {
            elements
                .iter()
                .flat_map(|e| e.skipped.iter().map(String::as_str))
        }
        let path_rules = self
            .rules
            .iter()
            .filter_map(|rule| rule.raw.as_ref()?.path_rules.as_deref())
            .flat_map(of);
        self.global
            .iter()
            .flat_map(|g| g.skipped.iter().map(String::as_str))
            .chain(of(&self.listeners))
            .chain(of(&self.backend_pools))
            .chain(of(&self.backend_settings))
            .chain(of(&self.rules))
            .chain(path_rules)
            .chain(of(&self.probes))
            .collect()
    }
}

/// A parsed file: its objects, the problems found reading them, and where its keys are.
pub struct Parsed {
    pub document: RawDocument,
    /// The text is not TOML: `errors` says where, and `document` is empty.
    pub syntax_error: bool,
    pub errors: Vec<ConfigError>,
    pub lines: LineIndex,
}

/// Reads `text`, the contents of `file`. A TOML syntax error stops here (every one found is
/// reported); anything else is reported per object and the rest is still read.
pub fn parse(text: &str, file: &Arc<str>) -> Parsed {
    let (root, syntax) = DeTable::parse_recoverable(text);
    let lines = LineIndex::new(text, root.get_ref());
    let mut reader = Reader {
        file: file.clone(),
        lines,
        errors: Vec::new(),
    };
    let mut document = RawDocument::default();
    if !syntax.is_empty() {
        for error in syntax {
            reader.syntax_error(&error);
        }
        let mut parsed = reader.finish(document);
        parsed.syntax_error = true;
        return parsed;
    }
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "global" => document.global = reader.table("global", value),
            "listeners" => document.listeners = reader.array("listeners", value, Reader::element),
            "backend_pools" => {
                document.backend_pools = reader.array("backend_pools", value, Reader::element);
            }
            "backend_settings" => {
                document.backend_settings =
                    reader.array("backend_settings", value, Reader::element);
            }
            "rules" => document.rules = reader.array("rules", value, Reader::rule),
            "probes" => document.probes = reader.array("probes", value, Reader::element),
            other => {
                let mut error = ConfigError::new(
                    &*reader.file,
                    other,
                    format!("unknown top-level key `{other}`"),
                    format!("remove it or correct its spelling; the top-level keys are {TOP_LEVEL_KEYS}"),
                );
                error.line = Some(reader.lines.line_of_offset(key_span.start));
                reader.errors.push(error);
            }
        }
    }
    reader.finish(document)
}

struct Reader {
    file: Arc<str>,
    lines: LineIndex,
    errors: Vec<ConfigError>,
}

impl Reader {
    fn finish(self, document: RawDocument) -> Parsed {
        Parsed {
            document,
            syntax_error: false,
            errors: self.errors,
            lines: self.lines,
        }
    }

    fn syntax_error(&mut self, error: &toml::de::Error) {
        let mut problem = format!("not valid TOML: {}", error.message().trim_end());
        let mut line = None;
        if let Some(span) = error.span() {
            let column = self.lines.column_of_offset(span.start);
            problem = format!("{problem} (column {column})");
            line = Some(self.lines.line_of_offset(span.start));
        }
        let mut error = ConfigError::new(
            &*self.file,
            "",
            problem,
            "correct the TOML syntax at that line (https://toml.io)",
        );
        error.line = line;
        self.errors.push(error);
    }

    /// `[key]`: a single table.
    fn table<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<Element<T>> {
        let origin = Origin::new(&self.file, key);
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => Some(self.element(origin, Spanned::new(span, table))),
            other => {
                self.errors.push(origin.error(
                    "",
                    format!("`{key}` must be a table, not {}", other.type_str()),
                    format!("write it as a [{key}] section"),
                ));
                None
            }
        }
    }

    /// `[[key]]`: an array of tables, each read by `read`.
    fn array<T>(
        &mut self,
        key: &str,
        value: Spanned<DeValue<'_>>,
        read: impl Fn(&mut Self, Origin, Spanned<DeTable<'_>>) -> Element<T>,
    ) -> Vec<Element<T>> {
        let origin = Origin::new(&self.file, key);
        let DeValue::Array(items) = value.into_inner() else {
            self.errors.push(origin.error(
                "",
                format!("`{key}` must be an array of tables"),
                format!("write each entry as its own [[{key}]] section"),
            ));
            return Vec::new();
        };
        let mut elements = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let origin = Origin::new(&self.file, format!("{key}[{i}]"));
            let span = item.span();
            match item.into_inner() {
                DeValue::Table(table) => {
                    elements.push(read(self, origin, Spanned::new(span, table)));
                }
                other => {
                    self.errors.push(origin.error(
                        "",
                        format!(
                            "each entry of `{key}` must be a table, not {}",
                            other.type_str()
                        ),
                        format!("write each entry as its own [[{key}]] section"),
                    ));
                    elements.push(Element {
                        origin,
                        name: None,
                        raw: None,
                        skipped: Vec::new(),
                    });
                }
            }
        }
        elements
    }

    /// One object, deserialized on its own. When a key is wrong (unknown, wrong type, bad
    /// value), it is reported, taken out, and the object read again, so every wrong key
    /// of the object is reported, and what is left is still validated; the keys taken out
    /// are kept in `skipped` so validation does not report their absence as well.
    fn element<T: DeserializeOwned>(
        &mut self,
        origin: Origin,
        mut table: Spanned<DeTable<'_>>,
    ) -> Element<T> {
        let name = match table.get_ref().get("name").map(|v| v.get_ref()) {
            Some(DeValue::String(name)) => Some(name.to_string()),
            _ => None,
        };
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let error = match T::deserialize(toml::de::Deserializer::from(table.clone())) {
                Ok(raw) => {
                    return Element {
                        origin,
                        name,
                        raw: Some(raw),
                        skipped,
                    }
                }
                Err(error) => error,
            };
            let config_error = self.serde_error(&origin, &error);
            let field = top_field(&config_error.key, &origin.key).map(str::to_owned);
            let missing = error.message().starts_with("missing field");
            // A required key we took out ourselves: already reported as wrong.
            if !(missing && skipped.contains(&config_error.key)) {
                self.errors.push(config_error);
            }
            match field {
                Some(field) if !missing && table.get_ref().contains_key(field.as_str()) => {
                    table.get_mut().remove(field.as_str());
                    skipped.push(origin.key_of(&field));
                }
                _ => {
                    return Element {
                        origin,
                        name,
                        raw: None,
                        skipped,
                    }
                }
            }
        }
    }

    /// A rule: its `[[rules.path_rules]]` are read one by one, before the rule itself.
    fn rule(&mut self, origin: Origin, mut table: Spanned<DeTable<'_>>) -> Element<RawRule> {
        let path_rules = table
            .get_mut()
            .remove("path_rules")
            .map(|value| self.array(&origin.key_of("path_rules"), value, Self::path_rule));
        let mut element: Element<RawRule> = self.element(origin, table);
        if let Some(rule) = &mut element.raw {
            rule.path_rules = path_rules;
        }
        element
    }

    fn path_rule(&mut self, origin: Origin, table: Spanned<DeTable<'_>>) -> Element<RawPathRule> {
        self.element(origin, table)
    }

    /// toml's message, at the key it is about, with a fix for the usual kinds.
    fn serde_error(&self, origin: &Origin, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim_end().to_owned();
        let mut key = error
            .span()
            .and_then(|span| self.lines.key_at(span.start))
            .filter(|key| key.starts_with(origin.key.as_str()))
            .map_or_else(|| origin.key.clone(), str::to_owned);
        let quoted = message.split('`').nth(1).unwrap_or_default();
        let fix = if message.starts_with("missing field") {
            key = origin.key_of(quoted);
            format!("add `{quoted} = ...` to this object (examples/gateway.toml shows every key)")
        } else if message.starts_with("unknown field") {
            "remove the key or correct its spelling; the keys allowed here are listed after \
             \"expected\""
                .to_owned()
        } else if message.starts_with("unknown variant") {
            "use one of the values listed after \"expected\"".to_owned()
        } else {
            "give a value of the type named after \"expected\" (examples/gateway.toml shows \
             every key with its default)"
                .to_owned()
        };
        let mut config_error = ConfigError::new(&*self.file, key, message, fix);
        config_error.line = error
            .span()
            .map(|span| self.lines.line_of_offset(span.start));
        config_error
    }
}

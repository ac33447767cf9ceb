//! Names for the generated file: Azure's where they are valid here (1-80 letters, digits,
//! `_`, `.`, `-`, starting with a letter or digit, ending with one or `_`), else the nearest
//! valid name, made unique within its kind.

use std::collections::HashSet;

/// The longest name the configuration accepts.
const NAME_MAX: usize = 80;

/// `name` made valid: other characters become `-` (runs of them one), the ends trimmed to
/// what a name may start and end with, and cut to [`NAME_MAX`]; `fallback` if nothing is
/// left.
pub fn sanitize(name: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(NAME_MAX)
        .collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
        out.pop();
    }
    if out.is_empty() {
        fallback.to_owned()
    } else {
        out
    }
}

/// Hands out names unique within one kind of object.
#[derive(Debug, Default)]
pub struct Namer {
    used: HashSet<String>,
}

impl Namer {
    /// `name` (already valid) if it is free, else `name-2`, `name-3`, ...
    pub fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_owned();
        let mut n = 2;
        while !self.used.insert(candidate.clone()) {
            let suffix = format!("-{n}");
            let keep = NAME_MAX.saturating_sub(suffix.len()).min(name.len());
            candidate = format!("{}{suffix}", &name[..keep]);
            n += 1;
        }
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_stay() {
        assert_eq!(
            sanitize("appGatewayHttpsListener", "x"),
            "appGatewayHttpsListener"
        );
        assert_eq!(sanitize("rule_1.a-b", "x"), "rule_1.a-b");
    }

    #[test]
    fn invalid_names_get_the_nearest_valid_one() {
        assert_eq!(sanitize("<ruleName1>", "x"), "ruleName1");
        assert_eq!(sanitize("My Pool (west)", "x"), "My-Pool-west");
        assert_eq!(
            sanitize("[variables('listener')]", "x"),
            "variables-listener"
        );
        assert_eq!(sanitize("-._", "rule-1"), "rule-1");
        assert_eq!(sanitize(&"a".repeat(100), "x").len(), NAME_MAX);
    }

    #[test]
    fn unique_within_a_kind() {
        let mut namer = Namer::default();
        assert_eq!(namer.unique("web"), "web");
        assert_eq!(namer.unique("web"), "web-2");
        assert_eq!(namer.unique("web"), "web-3");
        let long = "a".repeat(NAME_MAX);
        assert_eq!(namer.unique(&long), long);
        assert_eq!(namer.unique(&long).len(), NAME_MAX);
    }
}

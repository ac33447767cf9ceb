//! Azure JSON as people have it: ARM templates may carry `//` and `/* */` comments (ARM
//! accepts them), and snippets copied from documentation carry trailing commas and come
//! without their enclosing braces (`"httpListeners": [...], "requestRoutingRules": [...]`).
//! Text → [`serde_json::Value`], with a note for each leniency that was needed.

use serde_json::Value;

/// The parsed value, and what had to be forgiven to parse it.
#[derive(Debug)]
pub struct Parsed {
    pub value: Value,
    pub notes: Vec<String>,
}

/// Parses `text`; the error says where the JSON is broken (`LINE:COLUMN: ...`).
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut notes = Vec::new();
    let (mut text, comments) = blank_comments(text);
    if comments > 0 {
        notes.push(format!("{comments} comment(s) ignored"));
    }
    // `"key": value, ...` with no braces around it: a fragment of an object.
    if text.trim_start().starts_with('"') {
        text = format!("{{{text}\n}}");
        notes.push(
            "the input is a fragment (members without their enclosing braces); read as one object"
                .to_owned(),
        );
    }
    let (text, commas) = drop_trailing_commas(&text);
    if commas > 0 {
        notes.push(format!(
            "{commas} trailing comma(s) before a closing brace or bracket ignored"
        ));
    }
    match serde_json::from_str(&text) {
        Ok(value) => Ok(Parsed { value, notes }),
        Err(error) => Err(format!(
            "{}:{}: not JSON: {error}",
            error.line(),
            error.column()
        )),
    }
}

/// Replaces `//` and `/* */` comments outside strings by spaces (newlines kept, so line
/// numbers in errors still match the file); how many there were.
fn blank_comments(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    let mut count = 0;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                count += 1;
                out.push(' ');
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                count += 1;
                chars.next();
                out.push_str("  ");
                let mut previous = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            _ => out.push(c),
        }
    }
    (out, count)
}

/// Drops commas outside strings that only whitespace separates from a `}` or `]`.
fn drop_trailing_commas(text: &str) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut count = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(&next) = chars.get(i + 1) {
                    out.push(next);
                    i += 1;
                }
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == ','
            && matches!(
                chars[i + 1..].iter().find(|c| !c.is_whitespace()),
                Some('}' | ']')
            )
        {
            count += 1;
            out.push(' ');
        } else {
            out.push(c);
        }
        i += 1;
    }
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_needs_no_note() {
        let parsed = parse(r#"{"a": [1, 2], "b": "x,}"}"#).expect("valid JSON");
        assert_eq!(parsed.value["b"], "x,}");
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    }

    #[test]
    fn forgives_comments_trailing_commas_and_missing_braces() {
        let text = "\"a\": [1, 2,], // one\n/* two\n */ \"b\": {\"c\": \"//not a comment\",},\n";
        let parsed = parse(text).expect("lenient JSON");
        assert_eq!(parsed.value["a"], serde_json::json!([1, 2]));
        assert_eq!(parsed.value["b"]["c"], "//not a comment");
        assert_eq!(parsed.notes.len(), 3, "{:?}", parsed.notes);
    }

    #[test]
    fn broken_json_says_where() {
        let error = parse("{\n  \"a\": [1 2]\n}").expect_err("not JSON");
        assert!(error.starts_with("2:"), "{error}");
    }
}

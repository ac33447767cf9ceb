//! What the import could not carry over, or carried over differently: printed on stderr and
//! written as comments at the top of the generated file, grouped by what the operator has
//! to do about it.

use std::fmt::Write as _;

/// Why an entry is in the report; the order is the order of the report's sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A value to fill in before the file can be used (a certificate, a missing port).
    ToDo,
    /// A reference that could not be followed; nothing was guessed.
    Unresolved,
    /// An Azure feature this gateway does not have.
    NotCarried,
    /// Carried over, with a difference in behaviour or in name.
    Changed,
    /// An Azure field present in the input that was not read.
    Ignored,
    /// How the input was read.
    Input,
}

impl Kind {
    const ALL: [Self; 6] = [
        Self::ToDo,
        Self::Unresolved,
        Self::NotCarried,
        Self::Changed,
        Self::Ignored,
        Self::Input,
    ];

    fn heading(self) -> &'static str {
        match self {
            Self::ToDo => "To do before this file can be used",
            Self::Unresolved => "References that could not be followed (nothing was guessed)",
            Self::NotCarried => "Not carried over (no equivalent in this gateway)",
            Self::Changed => "Carried over with a difference",
            Self::Ignored => "Azure fields ignored",
            Self::Input => "How the input was read",
        }
    }
}

/// One finding: about which Azure object (e.g. `httpListeners/web`; empty for the whole
/// gateway), and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub at: String,
    pub what: String,
}

impl Entry {
    fn line(&self) -> String {
        if self.at.is_empty() {
            self.what.clone()
        } else {
            format!("{}: {}", self.at, self.what)
        }
    }
}

/// Every finding of one import, in the order found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    entries: Vec<Entry>,
}

/// Width the comments in the generated file are wrapped to.
const COMMENT_WIDTH: usize = 100;

impl Report {
    pub fn add(&mut self, kind: Kind, at: impl Into<String>, what: impl Into<String>) {
        let entry = Entry {
            kind,
            at: at.into(),
            what: what.into(),
        };
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// The entries of `kind`.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.kind == kind)
    }

    /// For stderr: a heading per section, one line per entry.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for kind in Kind::ALL {
            let mut entries = self.of(kind).peekable();
            if entries.peek().is_none() {
                continue;
            }
            let _ = writeln!(text, "{}:", kind.heading());
            for entry in entries {
                let _ = writeln!(text, "  - {}", entry.line());
            }
        }
        text
    }

    /// For the top of the generated file: the same, as `#` comments wrapped to
    /// [`COMMENT_WIDTH`].
    pub fn to_comments(&self) -> String {
        let mut text = String::new();
        for kind in Kind::ALL {
            let mut entries = self.of(kind).peekable();
            if entries.peek().is_none() {
                continue;
            }
            let _ = writeln!(text, "#\n# {}:", kind.heading());
            for entry in entries {
                text.push_str(&wrap(&entry.line(), "#   - ", "#     "));
            }
        }
        text
    }
}

/// `text` for a `#` comment: names and values come from the input, and a control character
/// (a line break, DEL) would end the comment or make the file not TOML, so each is written
/// escaped (`\u{7f}`).
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != ' ' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` as comment lines: `first` before the first line, `rest` before the others.
pub fn wrap(text: &str, first: &str, rest: &str) -> String {
    let text = printable(text);
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > COMMENT_WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_in_order_without_duplicates() {
        let mut report = Report::default();
        report.add(
            Kind::NotCarried,
            "",
            "webApplicationFirewallConfiguration: no WAF",
        );
        report.add(Kind::ToDo, "sslCertificates/cert", "export it");
        report.add(Kind::ToDo, "sslCertificates/cert", "export it");
        let text = report.to_text();
        assert_eq!(
            text,
            "To do before this file can be used:\n  - sslCertificates/cert: export it\n\
             Not carried over (no equivalent in this gateway):\n  - \
             webApplicationFirewallConfiguration: no WAF\n"
        );
        let comments = report.to_comments();
        assert!(
            comments.lines().all(|line| line.starts_with('#')),
            "{comments}"
        );
        assert!(comments.contains("#   - sslCertificates/cert: export it\n"));
    }

    /// Found by the `azure_import` fuzz target: a name with DEL characters made the
    /// generated file not TOML.
    #[test]
    fn control_characters_are_escaped_in_comments() {
        let comments = wrap("ab\u{7f}c: x\u{0}y\rz\u{85}", "# ", "# ");
        assert_eq!(comments, "# ab\\u{7f}c: x\\u{0}y\\rz\\u{85}\n");
        assert_eq!(printable("caf\u{e9} \t"), "caf\u{e9} \\t");
    }

    #[test]
    fn long_comments_wrap() {
        let long = "word ".repeat(60);
        let wrapped = wrap(&long, "#   - ", "#     ");
        assert!(wrapped.lines().count() > 2);
        assert!(
            wrapped.lines().all(|l| l.len() <= COMMENT_WIDTH),
            "{wrapped}"
        );
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("#     word")));
    }
}

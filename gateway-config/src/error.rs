//! What is wrong with a configuration: one [`ConfigError`] per problem, all of them
//! collected in [`ConfigErrors`] so an operator fixes a file in one pass.

use std::fmt;

/// The `file` of problems with a command-line flag rather than with the file.
pub const COMMAND_LINE: &str = "command line";

/// One problem: where it is, what is wrong, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The configuration file as given to `--config`, or `command line` for a problem with a
    /// flag.
    pub file: String,
    /// 1-based line in `file` of the key (or of the object holding it), when known.
    pub line: Option<usize>,
    /// Key path, e.g. `listeners[1].certificate` (arrays count from 0) or `--log-level`.
    /// Empty for problems with the whole file (unreadable, not TOML).
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ConfigError {
    pub(crate) fn new(
        file: impl Into<String>,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line: None,
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// `FILE[:LINE]: KEY: PROBLEM (fix: FIX)`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {} (fix: {})", self.problem, self.fix)
    }
}

/// Every problem found; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub(crate) Vec<ConfigError>);

impl ConfigErrors {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_line_key_problem_and_fix() {
        let mut error = ConfigError::new(
            "gw.toml",
            "listeners[1].bind",
            "\"x\" is not IP:PORT",
            "write e.g. \"0.0.0.0:80\"",
        );
        assert_eq!(
            error.to_string(),
            "gw.toml: listeners[1].bind: \"x\" is not IP:PORT (fix: write e.g. \"0.0.0.0:80\")"
        );
        error.line = Some(7);
        let both = ConfigErrors(vec![error.clone(), error]);
        let text = both.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with("gw.toml:7: listeners[1].bind: "), "{text}");
    }
}

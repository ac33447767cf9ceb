//! `[global] admin_token_file`: the bearer token the admin listener asks for, read when the
//! configuration is loaded (at start, by `gateway check`, and at each reload), so a file
//! that cannot be used refuses the configuration like a bad certificate does.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::Invalid;

/// The admin listener's bearer token and the file it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub path: PathBuf,
    /// The file's permission bits: a file others may read is a warning (`plan`).
    pub mode: u32,
    secret: Vec<u8>,
}

const FIX: &str = "write the token on one line of the file (e.g. `head -c 32 /dev/urandom | \
                   base64 > FILE; chmod 600 FILE`), or remove admin_token_file";

impl AdminToken {
    /// Reads the token: the file's text without the whitespace around it, which must be
    /// non-empty visible ASCII (it is sent in an `Authorization` header).
    pub fn read(path: &Path) -> Result<Self, Invalid> {
        use std::os::unix::fs::PermissionsExt as _;
        let invalid = |problem: String| Invalid {
            problem,
            fix: FIX.to_owned(),
        };
        let shown = path.display();
        let bytes = std::fs::read(path).map_err(|error| {
            invalid(format!("cannot read the admin token file {shown}: {error}"))
        })?;
        let mode = std::fs::metadata(path)
            .map(|meta| meta.permissions().mode() & 0o7777)
            .unwrap_or(0);
        let secret = bytes.trim_ascii();
        if secret.is_empty() {
            return Err(invalid(format!("the admin token file {shown} is empty")));
        }
        if !secret.iter().all(u8::is_ascii_graphic) {
            return Err(invalid(format!(
                "the admin token in {shown} is not one word of visible ASCII characters"
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            mode,
            secret: secret.to_vec(),
        })
    }

    /// The token, as a client must send it after `Bearer `.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Whether users other than the owner may read the file.
    pub fn readable_by_others(&self) -> bool {
        self.mode & 0o044 != 0
    }
}

/// Never the secret: configurations are logged and compared in tests.
impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn file(name: &str, text: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write the token file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn the_token_is_the_trimmed_text_and_never_shown() {
        let token = AdminToken::read(&file("ok", "  s3cr3t-Token/+=\n", 0o600)).expect("valid");
        assert_eq!(token.secret(), b"s3cr3t-Token/+=");
        assert!(!token.readable_by_others());
        assert!(!format!("{token:?}").contains("s3cr3t"), "{token:?}");
        let open = AdminToken::read(&file("open", "t\n", 0o644)).expect("valid");
        assert!(open.readable_by_others());
    }

    #[test]
    fn missing_empty_and_spaced_tokens_are_refused() {
        let missing = AdminToken::read(Path::new("/nonexistent/token")).expect_err("missing");
        assert!(missing.problem.contains("cannot read"), "{missing:?}");
        let empty = AdminToken::read(&file("empty", " \n", 0o600)).expect_err("empty");
        assert!(empty.problem.contains("is empty"), "{empty:?}");
        let spaced = AdminToken::read(&file("spaced", "two words\n", 0o600)).expect_err("spaced");
        assert!(spaced.problem.contains("one word"), "{spaced:?}");
    }
}

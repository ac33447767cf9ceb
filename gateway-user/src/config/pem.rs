//! Checks that the PEM files a configuration names exist and hold what they should: a
//! certificate chain, a private key, CA certificates. PEM is parsed by `rustls-pki-types`;
//! whether a key matches its certificate is for the TLS layer to say when it loads them.

use std::path::{Path, PathBuf};

use rustls_pki_types::{
    pem::{self, PemObject},
    CertificateDer, PrivateKeyDer,
};

use super::matching::Invalid;

/// What a PEM file must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemKind {
    /// A listener's `certificate`: the leaf first, then any intermediates.
    CertificateChain,
    /// A listener's `private_key`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    PrivateKey,
    /// A settings' `trusted_ca`: one or more CA certificates.
    CaCertificates,
}

impl PemKind {
    fn what(self) -> &'static str {
        match self {
            Self::CertificateChain => "a certificate chain",
            Self::PrivateKey => "a private key",
            Self::CaCertificates => "CA certificates",
        }
    }

    fn expected_section(self) -> &'static str {
        match self {
            Self::CertificateChain | Self::CaCertificates => "-----BEGIN CERTIFICATE-----",
            Self::PrivateKey => "-----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)",
        }
    }
}

/// `path` as written, resolved against `base` (the configuration file's directory).
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    base.join(path)
}

/// Reads `path` and checks it holds `kind`.
pub fn check(path: &Path, kind: PemKind) -> Result<(), Invalid> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|error| Invalid {
        problem: format!("cannot read {} {shown}: {error}", kind.what()),
        fix: "give the path of an existing, readable PEM file (a relative path is taken \
              from the configuration file's directory)"
            .to_owned(),
    })?;
    let found = match kind {
        PemKind::CertificateChain | PemKind::CaCertificates => {
            count(CertificateDer::pem_slice_iter(&bytes))
        }
        PemKind::PrivateKey => match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(_) => Ok(1),
            Err(pem::Error::NoItemsFound) => Ok(0),
            Err(error) => Err(error),
        },
    };
    match found {
        Ok(0) => Err(Invalid {
            problem: format!("{shown} has no PEM section with {}", kind.what()),
            fix: format!(
                "point it at a PEM file with a {} section",
                kind.expected_section()
            ),
        }),
        Ok(_) => Ok(()),
        Err(error) => Err(Invalid {
            problem: format!("{shown} is not valid PEM: {error}"),
            fix: format!(
                "give a PEM file with a {} section (e.g. as written by openssl)",
                kind.expected_section()
            ),
        }),
    }
}

fn count<T>(items: impl Iterator<Item = Result<T, pem::Error>>) -> Result<usize, pem::Error> {
    let mut n = 0;
    for item in items {
        item?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/certs")
            .join(file)
    }

    #[test]
    fn accepts_the_example_certificate_and_key() {
        check(&example("example.crt"), PemKind::CertificateChain).expect("certificate");
        check(&example("example.key"), PemKind::PrivateKey).expect("key");
        check(&example("example.crt"), PemKind::CaCertificates).expect("as a CA");
    }

    #[test]
    fn a_key_is_not_a_certificate_and_a_missing_file_is_no_file() {
        let wrong = check(&example("example.key"), PemKind::CertificateChain)
            .expect_err("a key is not a certificate");
        assert!(
            wrong
                .problem
                .contains("has no PEM section with a certificate chain"),
            "{}",
            wrong.problem
        );
        let missing = check(&example("missing.pem"), PemKind::PrivateKey).expect_err("missing");
        assert!(
            missing.problem.contains("cannot read"),
            "{}",
            missing.problem
        );
    }
}

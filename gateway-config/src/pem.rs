//! The PEM files a configuration names — certificate chains, private keys, CA bundles —
//! read in one place, for both of their readers: validation (`gateway check`, a reload),
//! which checks that each file holds what it should and that a listener's key belongs to
//! its certificate, and the TLS layer, which loads them. PEM is parsed by
//! `rustls-pki-types`; every error names the file. A key pair is checked as the TLS server
//! loads it, with the same crypto [`provider`].

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{
        pem::{self, PemObject},
        CertificateDer, PrivateKeyDer,
    },
    sign::CertifiedKey,
};

use crate::{matching::Invalid, model::TlsFiles};

/// A PEM file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not valid PEM ({what}): {source}", path.display())]
    Parse {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{} has no PEM section with {what}", path.display())]
    Empty { what: &'static str, path: PathBuf },
}

/// What a PEM file must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PemKind {
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

/// The certificates of `path`, in file order (for a chain: the leaf first).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates_as(path, PemKind::CertificateChain)
}

/// The CA certificates of a bundle.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates_as(path, PemKind::CaCertificates)
}

/// The first private key of `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let what = PemKind::PrivateKey.what();
    let bytes = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => PemError::Empty {
            what,
            path: path.to_owned(),
        },
        source => PemError::Parse {
            what,
            path: path.to_owned(),
            source,
        },
    })
}

fn certificates_as(path: &Path, kind: PemKind) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let what = kind.what();
    let bytes = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Parse {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Why a listener's certificate and private key cannot be used together.
#[derive(Debug, thiserror::Error)]
pub enum KeyPairError {
    #[error(transparent)]
    Pem(PemError),
    #[error(
        "private key {} does not belong to certificate {}",
        key.display(), certificate.display()
    )]
    KeyMismatch { certificate: PathBuf, key: PathBuf },
    #[error(
        "cannot use private key {} with certificate {}: {source}",
        key.display(), certificate.display()
    )]
    Key {
        certificate: PathBuf,
        key: PathBuf,
        // Boxed: a rustls error is large, and this one is rare.
        #[source]
        source: Box<rustls::Error>,
    },
}

/// The certificate chain and private key of `files`, loaded with [`provider`] as the TLS
/// server uses them, once the key is known to belong to the certificate.
pub fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, KeyPairError> {
    let chain = certificates(&files.certificate).map_err(KeyPairError::Pem)?;
    let key = private_key(&files.private_key).map_err(KeyPairError::Pem)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|error| match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            KeyPairError::KeyMismatch {
                certificate: files.certificate.clone(),
                key: files.private_key.clone(),
            }
        }
        source => KeyPairError::Key {
            certificate: files.certificate.clone(),
            key: files.private_key.clone(),
            source: Box::new(source),
        },
    })
}

/// Whether the private key of `files` belongs to its certificate (and both can be read):
/// what `gateway check` reports about a listener's files; the TLS server checks the same
/// when it loads them through [`certified_key`].
pub(crate) fn check_key_pair(files: &TlsFiles) -> Result<(), KeyPairError> {
    certified_key(files).map(drop)
}

/// The `ring` crypto provider with rustls' default suites and key exchange groups.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// `path` as written, resolved against `base` (the configuration file's directory).
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    base.join(path)
}

/// Reads `path` and checks it holds `kind`; the problem, and how to fix it, for
/// validation.
pub(crate) fn check(path: &Path, kind: PemKind) -> Result<(), Invalid> {
    let loaded = match kind {
        PemKind::CertificateChain | PemKind::CaCertificates => {
            certificates_as(path, kind).map(drop)
        }
        PemKind::PrivateKey => private_key(path).map(drop),
    };
    loaded.map_err(|error| match error {
        PemError::Read { .. } => Invalid {
            problem: error.to_string(),
            fix: "give the path of an existing, readable PEM file (a relative path is taken \
                  from the configuration file's directory)"
                .to_owned(),
        },
        PemError::Empty { .. } => Invalid {
            problem: error.to_string(),
            fix: format!(
                "point it at a PEM file with a {} section",
                kind.expected_section()
            ),
        },
        PemError::Parse { path, source, .. } => Invalid {
            problem: format!("{} is not valid PEM: {source}", path.display()),
            fix: format!(
                "give a PEM file with a {} section (e.g. as written by openssl)",
                kind.expected_section()
            ),
        },
    })
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

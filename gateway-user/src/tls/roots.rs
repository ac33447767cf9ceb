//! The CAs an HTTPS backend's certificate is verified against: the system's trust store, or
//! exactly the bundle a backend settings' `trusted_ca` names.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_native_certs::CertificateResult;

use crate::config::pem::{self, PemError};

/// Why no trust anchors could be had.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error(
        "no usable CA certificate in the system trust store{}; install the distribution's \
         ca-certificates package, point SSL_CERT_FILE or SSL_CERT_DIR at a CA bundle, or set \
         trusted_ca",
        problems(.errors)
    )]
    NoSystemRoots {
        /// What went wrong reading the store, if anything did.
        errors: Vec<rustls_native_certs::Error>,
    },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(
        "trusted_ca {}: none of its {ignored} certificates can be a trust anchor",
        path.display()
    )]
    NoUsableCa { path: PathBuf, ignored: usize },
}

fn problems(errors: &[rustls_native_certs::Error]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(" ({})", all.join("; "))
}

/// The system's CA certificates, as `rustls-native-certs` finds them (on Linux the
/// distribution's bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
pub fn system() -> Result<RootCertStore, RootsError> {
    from_native(rustls_native_certs::load_native_certs())
}

/// What was found, unless that is nothing usable; errors reading some of the store are
/// tolerated when other certificates were found.
pub(super) fn from_native(found: CertificateResult) -> Result<RootCertStore, RootsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(RootsError::NoSystemRoots {
            errors: found.errors,
        });
    }
    Ok(roots)
}

/// Exactly the CA certificates of the PEM bundle at `path`.
pub fn bundle(path: &Path) -> Result<RootCertStore, RootsError> {
    let certs = pem::ca_certificates(path)?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(RootsError::NoUsableCa {
            path: path.to_owned(),
            ignored,
        });
    }
    Ok(roots)
}

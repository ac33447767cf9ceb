//! Reading the PEM files a configuration names: certificate chains, private keys, CA
//! bundles. Parsing is `rustls-pki-types`'; every error names the file.

use std::{
    io,
    path::{Path, PathBuf},
};

use rustls::pki_types::{
    pem::{self, PemObject},
    CertificateDer, PrivateKeyDer,
};

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

const CHAIN: &str = "a certificate chain";
const KEY: &str = "a private key";
const CA: &str = "CA certificates";

/// The certificates of `path`, in file order (for a chain: the leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates_as(path, CHAIN)
}

/// The CA certificates of a bundle.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates_as(path, CA)
}

/// The first private key of `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path, KEY)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => PemError::Empty {
            what: KEY,
            path: path.to_owned(),
        },
        source => PemError::Parse {
            what: KEY,
            path: path.to_owned(),
            source,
        },
    })
}

fn certificates_as(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
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

//! `[[listeners]]`, each on its own; what listeners sharing a bind must agree on is
//! checked in `binds.rs`.

use std::{collections::HashSet, net::SocketAddr};

use super::{read, Checker};
use crate::{
    document::{Element, Origin},
    matching::{HostMatch, HostPattern},
    model::{Protocol, TlsFiles},
    pem::{self, KeyPairError, PemKind},
    raw::RawListener,
};

/// A listener that validated on its own.
#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub origin: Origin,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    pub hosts: HostMatch,
    pub tls: Option<TlsFiles>,
}

/// `Some` per listener that validated, aligned with the elements.
pub fn check(elements: &[Element<RawListener>], c: &mut Checker<'_>) -> Vec<Option<Listener>> {
    let mut checked = vec![None; elements.len()];
    for (i, origin, raw) in read(elements) {
        let errors_before = c.errors.len();
        let bind = raw.bind.parse::<SocketAddr>();
        if bind.is_err() {
            c.error(
                origin,
                "bind",
                format!("bind {:?} is not an IP:PORT address", raw.bind),
                "write e.g. \"0.0.0.0:443\", \"[::]:80\" or \"127.0.0.1:8080\" (port 0 picks \
                 a free port)",
            );
        }
        let hosts = host_names(origin, raw, c);
        let tls = tls(origin, raw, c);
        if let (Ok(bind), true) = (bind, c.errors.len() == errors_before) {
            checked[i] = Some(Listener {
                name: raw.name.clone(),
                origin: origin.clone(),
                bind,
                protocol: raw.protocol,
                hosts,
                tls,
            });
        }
    }
    checked
}

fn host_names(origin: &Origin, raw: &RawListener, c: &mut Checker<'_>) -> HostMatch {
    let Some(names) = &raw.host_names else {
        return HostMatch::Any;
    };
    if names.is_empty() {
        c.error(
            origin,
            "host_names",
            "host_names is empty, so no request could match",
            "list the host names this listener serves, or remove host_names to take every host",
        );
    }
    let mut patterns = Vec::new();
    let mut seen = HashSet::new();
    for (j, text) in names.iter().enumerate() {
        let field = format!("host_names[{j}]");
        match HostPattern::parse(text) {
            Ok(pattern) if !seen.insert(pattern.clone()) => c.error(
                origin,
                &field,
                format!("host name {text:?} is listed twice"),
                "list each host name once",
            ),
            Ok(pattern) => patterns.push(pattern),
            Err(invalid) => c.invalid(origin, &field, invalid),
        }
    }
    HostMatch::Names(patterns)
}

fn tls(origin: &Origin, raw: &RawListener, c: &mut Checker<'_>) -> Option<TlsFiles> {
    let files = [
        ("certificate", &raw.certificate, PemKind::CertificateChain),
        ("private_key", &raw.private_key, PemKind::PrivateKey),
    ];
    match raw.protocol {
        Protocol::Http => {
            for (field, value, _) in files {
                if value.is_some() {
                    c.error(
                        origin,
                        field,
                        format!("{field} is set on an http listener, which does not use it"),
                        format!("remove {field}, or set protocol = \"https\""),
                    );
                }
            }
            None
        }
        Protocol::Https => {
            let mut paths = Vec::new();
            let mut readable = true;
            for (field, value, kind) in files {
                let Some(path) = value else {
                    c.error(
                        origin,
                        field,
                        format!("an https listener needs {field}"),
                        format!(
                            "set {field} = \"path/to/file.pem\" (PEM; a relative path is taken \
                             from the configuration file's directory)"
                        ),
                    );
                    continue;
                };
                let resolved = pem::resolve(c.base_dir(), path);
                if let Err(invalid) = pem::check(&resolved, kind) {
                    c.invalid(origin, field, invalid);
                    readable = false;
                }
                paths.push(resolved);
            }
            let [certificate, private_key] = <[_; 2]>::try_from(paths).ok()?;
            let files = TlsFiles {
                certificate,
                private_key,
            };
            if readable {
                key_pair(origin, raw, &files, c);
            }
            Some(files)
        }
    }
}

/// The key must belong to the certificate (loaded as the TLS server loads both).
fn key_pair(origin: &Origin, raw: &RawListener, files: &TlsFiles, c: &mut Checker<'_>) {
    match pem::check_key_pair(files) {
        Ok(()) => {}
        Err(mismatch @ KeyPairError::KeyMismatch { .. }) => c.error(
            origin,
            "private_key",
            mismatch.to_string(),
            "give the key the certificate was issued for (or the certificate issued for this key)",
        ),
        // As the TLS server would say it when it loads them.
        Err(error) => c.error(
            origin,
            "private_key",
            format!(
                "cannot use this certificate and key: listener {:?}: {error}",
                raw.name
            ),
            "give a certificate chain (leaf first) and the private key it was issued for",
        ),
    }
}

//! `httpListeners` (with their `frontendPorts`, `frontendIPConfigurations` and
//! `sslCertificates`) → `[[listeners]]`.

use std::net::SocketAddr;

use super::{Ctx, Link, Out, PLACEHOLDER};
use crate::{
    arm::{self, Certificate, HttpListener, Item},
    report::Kind,
};
use gateway_config::{model::Protocol, raw::RawListener};

/// Listener fields with no equivalent here.
const NOT_CARRIED: [(&str, &str); 3] = [
    (
        "customerrorconfigurations",
        "custom error pages are not supported; errors get a one-line body",
    ),
    (
        "sslprofile",
        "SSL profiles (TLS policy, client certificates) are not supported",
    ),
    (
        "firewallpolicy",
        "WAF policies are not supported; requests are not inspected",
    ),
];

pub(super) fn convert(cx: &mut Ctx<'_>) -> Vec<Out<RawListener>> {
    let gw = cx.gw;
    let mut out = Vec::new();
    for (position, item) in gw.http_listeners.iter().enumerate() {
        match listener(cx, position, item) {
            Some(raw) => out.push(Out {
                from: cx.at(arm::HTTP_LISTENERS, position, item.index),
                raw,
            }),
            None => {
                cx.skipped_listeners.insert(position);
            }
        }
    }
    out
}

/// Parses `Http`/`Https` (any case); `None` for other protocols.
pub(super) fn protocol(text: &str) -> Option<Protocol> {
    match text.to_ascii_lowercase().as_str() {
        "http" => Some(Protocol::Http),
        "https" => Some(Protocol::Https),
        _ => None,
    }
}

fn listener(cx: &mut Ctx<'_>, position: usize, item: &Item<HttpListener>) -> Option<RawListener> {
    let at = cx.at(arm::HTTP_LISTENERS, position, item.index);
    let name = cx.ours(arm::HTTP_LISTENERS, position);
    let props = &item.props;
    let protocol = match cx.text(&at, "protocol", props.protocol.as_deref()) {
        None => {
            cx.add(Kind::Changed, &at, "no protocol given; written as http");
            Protocol::Http
        }
        Some(text) => match protocol(&text) {
            Some(protocol) => protocol,
            None => {
                cx.add(
                    Kind::NotCarried,
                    &at,
                    format!(
                        "protocol {text:?} is not served (http and https only); the listener and \
                         its rules are left out"
                    ),
                );
                return None;
            }
        },
    };
    let bind = bind(cx, &at, &name, props);
    let mut host_names: Vec<String> = Vec::new();
    let single = props.host_name.iter();
    let many = props.host_names.iter().flatten();
    for written in single.chain(many) {
        if let Some(host) = cx.text(&at, "hostName", Some(written)) {
            if !host.is_empty() && !host_names.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
                host_names.push(host);
            }
        }
    }
    let (certificate, private_key) = match protocol {
        Protocol::Http => (None, None),
        Protocol::Https => {
            let (certificate, private_key) = certificate(cx, &at, &name, props);
            (Some(certificate), Some(private_key))
        }
    };
    cx.not_carried(&at, &props.other, &NOT_CARRIED);
    let mut silent = vec!["requireservernameindication"];
    silent.extend(NOT_CARRIED.iter().map(|(key, _)| *key));
    cx.ignored(&at, &props.other, &silent);
    Some(RawListener {
        name,
        bind,
        protocol,
        host_names: (!host_names.is_empty()).then_some(host_names),
        certificate,
        private_key,
    })
}

/// `<bind ip>:<frontend port>`; the port is a placeholder when the frontend port is not
/// known.
fn bind(cx: &mut Ctx<'_>, at: &str, name: &str, props: &HttpListener) -> String {
    let ip = cx.options.bind_ip;
    let frontend = cx.follow(
        at,
        "frontendIPConfiguration",
        props.frontend_ip_configuration.as_ref(),
        arm::FRONTEND_IP_CONFIGURATIONS,
    );
    if let Link::Found(found) = frontend {
        cx.frontend_users
            .entry(found.position)
            .or_default()
            .push(name.to_owned());
    }
    let port = match cx.follow(
        at,
        "frontendPort",
        props.frontend_port.as_ref(),
        arm::FRONTEND_PORTS,
    ) {
        Link::Found(found) => {
            let item = &cx.gw.frontend_ports[found.position];
            let port_at = cx.at(arm::FRONTEND_PORTS, found.position, item.index);
            let port = cx.number(&port_at, "port", item.props.port.as_ref());
            cx.ignored(&port_at, &item.props.other, &[]);
            match port.map(u16::try_from) {
                Some(Ok(port)) if port != 0 => Some(port),
                Some(_) => {
                    cx.add(Kind::ToDo, &port_at, "port is not 1-65535");
                    None
                }
                None => None,
            }
        }
        Link::Missing(_) => None,
        Link::None => {
            if props.frontend_port.is_none() {
                cx.add(Kind::ToDo, at, "no frontendPort given");
            }
            None
        }
    };
    match port {
        Some(port) => SocketAddr::new(ip, port).to_string(),
        None => {
            cx.add(
                Kind::ToDo,
                at,
                format!("the port is not known: bind = \"{ip}:{PLACEHOLDER}\" needs the port"),
            );
            match ip {
                std::net::IpAddr::V4(ip) => format!("{ip}:{PLACEHOLDER}"),
                std::net::IpAddr::V6(ip) => format!("[{ip}]:{PLACEHOLDER}"),
            }
        }
    }
}

/// Placeholder paths for the listener's certificate and key, and how to fill them in.
fn certificate(
    cx: &mut Ctx<'_>,
    at: &str,
    listener: &str,
    props: &HttpListener,
) -> (String, String) {
    let link = cx.follow(
        at,
        "sslCertificate",
        props.ssl_certificate.as_ref(),
        arm::SSL_CERTIFICATES,
    );
    let file = link.name().unwrap_or_else(|| listener.to_owned());
    let pem = format!("{PLACEHOLDER}/{file}.pem");
    let key = format!("{PLACEHOLDER}/{file}.key");
    if !cx.certificates_reported.insert(file.clone()) {
        return (pem, key);
    }
    let (cert_at, how) = match &link {
        Link::Found(found) => {
            let item = &cx.gw.ssl_certificates[found.position];
            let cert_at = cx.at(arm::SSL_CERTIFICATES, found.position, item.index);
            cx.ignored(&cert_at, &item.props.other, &["password", "publiccertdata"]);
            (cert_at, export(&item.props, &file, &pem, &key))
        }
        Link::Missing(_) | Link::None => (
            at.to_owned(),
            format!(
                "the certificate is not in the input: put its chain (leaf first) in {pem} and \
                 its private key in {key}, as PEM"
            ),
        ),
    };
    cx.add(
        Kind::ToDo,
        &cert_at,
        format!("certificate for listener {listener:?}: {how}"),
    );
    (pem, key)
}

/// How to turn the certificate Azure holds into the two PEM files.
pub(super) fn export(cert: &Certificate, file: &str, pem: &str, key: &str) -> String {
    let convert = format!(
        "openssl pkcs12 -in {file}.pfx -nokeys -out {pem} && openssl pkcs12 -in {file}.pfx \
         -nocerts -nodes -out {key} (add -legacy for PFX files from older tools)"
    );
    if let Some(secret) = &cert.key_vault_secret_id {
        format!(
            "held in Key Vault ({secret}): az keyvault secret download --id {secret} --encoding \
             base64 --file {file}.pfx, then {convert}"
        )
    } else if cert.data.is_some() {
        format!(
            "the input carries it as base64 PFX data (with a password): decode the data into \
             {file}.pfx (base64 -d), then {convert}, giving the password"
        )
    } else if cert.public_cert_data.is_some() {
        format!(
            "Azure exports only its public part, never the private key: take the PFX that was \
             uploaded (or its Key Vault secret) as {file}.pfx, then {convert}"
        )
    } else {
        format!(
            "no certificate data in the input: put its chain in {pem} and its key in {key}, as PEM"
        )
    }
}

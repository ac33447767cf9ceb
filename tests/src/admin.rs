//! The admin listener's `GET /backends` (backend health) and `GET /tunnels` (live tunnels),
//! fetched over a plain socket and read from their JSON into small views, and polling on
//! them.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::{
    http::{complete_body, head_end, Head},
    wait::eventually,
    Gateway,
};
use serde_json::Value;

/// How long one admin request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to one raw request: status, head and body.
#[derive(Debug)]
pub struct RawAnswer {
    pub head: Head,
    pub body: String,
}

impl RawAnswer {
    pub fn status(&self) -> u16 {
        self.head.status().expect("a status line")
    }
}

/// Sends `request` (raw bytes: a whole request, `Connection: close` included) to the admin
/// listener and reads the answer to the end.
pub fn raw_request(admin: SocketAddr, request: &[u8]) -> RawAnswer {
    let (head, body) = exchange(admin, request);
    RawAnswer {
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path` from the admin listener: its head and decoded body.
pub(crate) fn get(admin: SocketAddr, path: &str) -> (Head, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    exchange(admin, request.as_bytes())
}

/// [`raw_request`]'s exchange: the answer's head and its body, decoded.
fn exchange(admin: SocketAddr, request: &[u8]) -> (Head, Vec<u8>) {
    let mut stream =
        TcpStream::connect_timeout(&admin, FETCH_TIMEOUT).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(FETCH_TIMEOUT))
        .expect("set the admin read timeout");
    stream.write_all(request).expect("send the admin request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the admin answer");
    let end = head_end(&response).unwrap_or_else(|| {
        panic!(
            "no complete head in {:?}",
            String::from_utf8_lossy(&response)
        )
    });
    let head = Head::parse(&response[..end]).expect("parse the admin answer's head");
    let body = complete_body(&head, &response[end..])
        .expect("decode the admin answer's body")
        .unwrap_or_else(|| response[end..].to_vec());
    (head, body)
}

/// `GET path` from the admin listener, parsed as JSON.
pub fn get_json(admin: SocketAddr, path: &str) -> Value {
    let (head, body) = get(admin, path);
    assert_eq!(head.status(), Some(200), "GET {path}:\n{}", head.text());
    assert_eq!(
        head.header("content-type"),
        Some("application/json"),
        "GET {path}"
    );
    serde_json::from_slice(&body).unwrap_or_else(|error| {
        panic!(
            "GET {path} is not JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

fn str_field(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {value}"))
        .to_owned()
}

fn u64_field(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key:?} is not an unsigned integer in {value}"))
}

fn f64_field(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key:?} is not a number in {value}"))
}

fn bool_field(value: &Value, key: &str) -> bool {
    value[key]
        .as_bool()
        .unwrap_or_else(|| panic!("{key:?} is not a boolean in {value}"))
}

/// The last probe of a backend, as `/backends` shows it.
#[derive(Clone, Debug)]
pub struct LastProbe {
    pub passed: bool,
    pub status: Option<u64>,
    pub error: Option<String>,
}

/// One backend of `/backends`.
#[derive(Clone, Debug)]
pub struct BackendView {
    pub pool: String,
    pub settings: String,
    pub address: String,
    pub state: String,
    pub takes_traffic: bool,
    pub since_unix: u64,
    pub probe: Option<String>,
    pub last_probe: Option<LastProbe>,
    pub consecutive_successes: u64,
    pub consecutive_failures: u64,
    pub probes_failed: u64,
    pub passive_failures: u64,
    pub ejected: bool,
    pub ejected_for_secs: f64,
    pub ejections_total: u64,
    pub active_connections: u64,
    /// The JSON, for failure messages.
    pub json: String,
}

impl BackendView {
    fn parse(value: &Value) -> Self {
        let last_probe = match &value["last_probe"] {
            Value::Null => None,
            probe => Some(LastProbe {
                passed: bool_field(probe, "passed"),
                status: probe["status"].as_u64(),
                error: probe["error"].as_str().map(str::to_owned),
            }),
        };
        let passive = &value["passive"];
        Self {
            pool: str_field(value, "pool"),
            settings: str_field(value, "settings"),
            address: str_field(value, "address"),
            state: str_field(value, "state"),
            takes_traffic: bool_field(value, "takes_traffic"),
            since_unix: u64_field(value, "since_unix"),
            probe: value["probe"].as_str().map(str::to_owned),
            last_probe,
            consecutive_successes: u64_field(value, "consecutive_successes"),
            consecutive_failures: u64_field(value, "consecutive_failures"),
            probes_failed: u64_field(value, "probes_failed"),
            passive_failures: u64_field(passive, "consecutive_failures"),
            ejected: bool_field(passive, "ejected"),
            ejected_for_secs: f64_field(passive, "ejected_for_secs"),
            ejections_total: u64_field(passive, "ejections_total"),
            active_connections: u64_field(value, "active_connections"),
            json: value.to_string(),
        }
    }

    /// The last probe; panics if there was none.
    pub fn last(&self) -> &LastProbe {
        self.last_probe
            .as_ref()
            .unwrap_or_else(|| panic!("no last_probe: {}", self.json))
    }

    /// The last probe's error, or `""`.
    pub fn error(&self) -> &str {
        self.last_probe
            .as_ref()
            .and_then(|probe| probe.error.as_deref())
            .unwrap_or("")
    }
}

/// Every backend of `/backends`.
pub fn backends(gateway: &Gateway) -> Vec<BackendView> {
    let json = get_json(gateway.admin_addr(), "/backends");
    json["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("/backends has no \"backends\" array: {json}"))
        .iter()
        .map(BackendView::parse)
        .collect()
}

/// The backend `addr` of `pool` (under whichever settings; the pool must use one only).
pub fn backend(gateway: &Gateway, pool: &str, addr: SocketAddr) -> BackendView {
    backend_in(&backends(gateway), pool, addr)
}

/// The backend `addr` of `pool` among `all`.
pub fn backend_in(all: &[BackendView], pool: &str, addr: SocketAddr) -> BackendView {
    let address = addr.to_string();
    let mut matching = all
        .iter()
        .filter(|b| b.pool == pool && b.address == address);
    let found = matching
        .next()
        .unwrap_or_else(|| panic!("no backend {address} of pool {pool:?} in /backends: {all:#?}"))
        .clone();
    assert!(
        matching.next().is_none(),
        "{address} is in pool {pool:?} under several settings"
    );
    found
}

/// Polls `/backends` until the backend `addr` of `pool` satisfies `check`, and returns
/// the view that did.
pub async fn wait_backend(
    gateway: &Gateway,
    pool: &str,
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&BackendView) -> bool,
) -> BackendView {
    let mut seen = None;
    eventually(Duration::from_secs(10), what, || {
        let view = backend(gateway, pool, addr);
        if check(&view) {
            seen = Some(view);
            Ok(())
        } else {
            Err(view.json)
        }
    })
    .await;
    seen.expect("eventually returned, so a view matched")
}

/// Polls `/backends` until every backend in `which` (pool, address) is in `state`;
/// returns their views in the same order.
pub async fn wait_states(
    gateway: &Gateway,
    which: &[(&str, SocketAddr)],
    state: &str,
) -> Vec<BackendView> {
    let mut seen = Vec::new();
    let what = format!("{} backends {state}", which.len());
    eventually(Duration::from_secs(10), &what, || {
        let all = backends(gateway);
        let views: Vec<BackendView> = which
            .iter()
            .map(|(pool, addr)| backend_in(&all, pool, *addr))
            .collect();
        match views.iter().find(|view| view.state != state) {
            Some(other) => Err(other.json.clone()),
            None => {
                seen = views;
                Ok(())
            }
        }
    })
    .await;
    seen
}

/// One tunnel of `/tunnels`.
#[derive(Clone, Debug)]
pub struct TunnelView {
    pub id: u64,
    pub client: String,
    pub backend: String,
    pub pool: String,
    pub settings: String,
    pub mode: String,
    pub client_to_backend_bytes: u64,
    pub backend_to_client_bytes: u64,
    pub opened_unix: u64,
    pub age_secs: f64,
    pub idle_secs: f64,
    pub draining: bool,
    pub json: String,
}

/// Every tunnel of `/tunnels`; checks that `count` matches.
pub fn tunnels(gateway: &Gateway) -> Vec<TunnelView> {
    let json = get_json(gateway.admin_addr(), "/tunnels");
    let list = json["tunnels"]
        .as_array()
        .unwrap_or_else(|| panic!("/tunnels has no \"tunnels\" array: {json}"));
    assert_eq!(
        json["count"].as_u64(),
        Some(list.len() as u64),
        "/tunnels count: {json}"
    );
    list.iter()
        .map(|value| TunnelView {
            id: u64_field(value, "id"),
            client: str_field(value, "client"),
            backend: str_field(value, "backend"),
            pool: str_field(value, "pool"),
            settings: str_field(value, "settings"),
            mode: str_field(value, "mode"),
            client_to_backend_bytes: u64_field(value, "client_to_backend_bytes"),
            backend_to_client_bytes: u64_field(value, "backend_to_client_bytes"),
            opened_unix: u64_field(value, "opened_unix"),
            age_secs: f64_field(value, "age_secs"),
            idle_secs: f64_field(value, "idle_secs"),
            draining: bool_field(value, "draining"),
            json: value.to_string(),
        })
        .collect()
}

/// The tunnel whose client end is `client`; `None` when it is not listed.
pub fn tunnel_of(gateway: &Gateway, client: SocketAddr) -> Option<TunnelView> {
    let client = client.to_string();
    tunnels(gateway).into_iter().find(|t| t.client == client)
}

/// Polls `/tunnels` until the tunnel of `client` satisfies `check`; returns that view.
pub async fn wait_tunnel(
    gateway: &Gateway,
    client: SocketAddr,
    what: &str,
    check: impl Fn(&TunnelView) -> bool,
) -> TunnelView {
    let mut seen = None;
    eventually(Duration::from_secs(10), what, || {
        match tunnel_of(gateway, client) {
            Some(view) if check(&view) => {
                seen = Some(view);
                Ok(())
            }
            Some(view) => Err(view.json),
            None => Err(format!("no tunnel from {client} in /tunnels")),
        }
    })
    .await;
    seen.expect("eventually returned, so a view matched")
}

//! Cookie affinity end to end: without the cookie, requests take turns over the pool and
//! each answer sets `ApplicationGatewayAffinity`; with it, a client keeps hitting one
//! backend, across 20 requests and a WebSocket upgrade (whose tunnel is still spliced on
//! the eBPF dataplane). The cookie is opaque: it never carries the backend's address.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use gateway_tests::{
    config::{Config, ConfigFile, Listener, Rule, Settings},
    data::seeded_rng,
    dataplane_tests,
    http_backend::HttpBackend,
    http_client::{cookie_pair, ws_connect_as, ws_echo_exchange, KeepAlive, Reply},
    skip_unprivileged, tunnels,
    wait::within,
    Dataplane, Gateway,
};

const COOKIE: &str = "ApplicationGatewayAffinity";
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn config(backends: &[SocketAddr], affinity: bool) -> Config {
    Config::new()
        .listener(Listener::http("web", "127.0.0.1:0"))
        .pool("pool", backends)
        .settings(Settings::http("sticky", 80).cookie_affinity(affinity))
        .rule(Rule::basic("all", "web", "pool", "sticky"))
}

async fn start(
    test: &str,
    affinity: bool,
    dataplane: Dataplane,
) -> (Vec<HttpBackend>, Gateway, ConfigFile) {
    let mut backends = Vec::new();
    for name in ["one", "two", "three"] {
        backends.push(HttpBackend::start(name).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(HttpBackend::addr).collect();
    let config = ConfigFile::new(test, &config(&addrs, affinity));
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .start();
    (backends, gateway, config)
}

fn set_cookies(reply: &Reply) -> Vec<&str> {
    reply
        .head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.as_str())
        .collect()
}

/// Sends `count` requests on one connection, with `cookie` if given; returns the backend
/// of each answer and every `Set-Cookie` value.
async fn requests(
    gateway: SocketAddr,
    count: usize,
    cookie: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let mut client = KeepAlive::connect(gateway).await;
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    let mut answered = Vec::new();
    let mut cookies = Vec::new();
    for _ in 0..count {
        let reply = client.send("GET", "/page", "app.test", &headers, &[]).await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        answered.push(reply.header("x-backend").unwrap_or_default().to_owned());
        cookies.extend(set_cookies(&reply).into_iter().map(str::to_owned));
    }
    (answered, cookies)
}

async fn a_cookie_pins_requests_and_websockets(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let (backends, gateway, _dir) = start(test, true, dataplane).await;
    let addr = gateway.listen_addr();

    // New clients are spread round-robin, each told where it landed.
    let (answered, cookies) = requests(addr, 6, None).await;
    assert_eq!(answered, ["one", "two", "three", "one", "two", "three"]);
    assert_eq!(
        cookies.len(),
        6,
        "every answer to a client without the cookie sets it"
    );
    for cookie in &cookies {
        assert!(cookie.ends_with("; Path=/; HttpOnly"), "{cookie}");
        // An opaque id: 32 hex digits, no address in it.
        let value = cookie_pair([cookie.as_str()], COOKIE).expect("the affinity cookie");
        let id = &value[COOKIE.len() + 1..];
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{cookie}"
        );
    }
    let pinned_to = &answered[1];
    let cookie = cookie_pair(cookies.iter().map(String::as_str).skip(1), COOKIE)
        .expect("the second answer's cookie");

    // With the cookie: the same backend every time, and no new cookie.
    let with_others = format!("theme=dark; {cookie}");
    let (answered, new_cookies) = requests(addr, 20, Some(&with_others)).await;
    assert!(answered.iter().all(|b| b == pinned_to), "{answered:?}");
    assert!(new_cookies.is_empty(), "{new_cookies:?}");

    // A WebSocket upgrade with the cookie lands there too; its tunnel is carried as usual.
    let (ws, response) = within(
        STEP_TIMEOUT,
        "upgrade with the cookie",
        ws_connect_as(addr, "app.test", "/live", Some(&cookie)),
    )
    .await;
    let backend = response.headers().get("x-backend").map(|v| v.as_bytes());
    assert_eq!(backend, Some(pinned_to.as_bytes()));
    assert!(response.headers().get("set-cookie").is_none());
    let mut rng = seeded_rng(test);
    let (sent, received) = within(
        STEP_TIMEOUT,
        "the tunnel",
        ws_echo_exchange(ws, &mut rng, 1 << 20),
    )
    .await;
    assert_eq!(received, sent);
    let pinned = backends
        .iter()
        .find(|b| b.name() == pinned_to)
        .expect("a backend");
    assert_eq!(pinned.next_ws_record().await.received, sent);
    assert_eq!(tunnels::opened(&gateway, dataplane.tunnel_mode()), 1.0);

    // An upgrade without the cookie gets one on its 101.
    let (mut ws, response) = ws_connect_as(addr, "app.test", "/live", None).await;
    let set = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok());
    assert!(set.is_some_and(|v| v.starts_with(COOKIE)), "{set:?}");
    ws.close(None).await.expect("close");

    // A cookie naming no backend of the pool is replaced.
    let bogus = format!("{COOKIE}=00000000000000000000000000000000");
    let (_, replaced) = requests(addr, 1, Some(&bogus)).await;
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_ne!(
        cookie_pair(replaced.iter().map(String::as_str), COOKIE),
        Some(bogus)
    );
}

dataplane_tests!(a_cookie_pins_requests_and_websockets => a_cookie_pins_requests_and_websockets_ebpf, a_cookie_pins_requests_and_websockets_userspace);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_affinity_requests_take_turns_and_no_cookie_is_set() {
    let (backends, gateway, _dir) = start(
        "without_affinity_requests_take_turns_and_no_cookie_is_set",
        false,
        Dataplane::Userspace,
    )
    .await;
    let pretend = format!("{COOKIE}=whatever");
    let (answered, cookies) = requests(gateway.listen_addr(), 9, Some(&pretend)).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for backend in &answered {
        *counts.entry(backend).or_default() += 1;
    }
    assert_eq!(counts.len(), backends.len(), "{answered:?}");
    assert!(counts.values().all(|&n| n == 3), "{answered:?}");
    assert!(cookies.is_empty(), "{cookies:?}");
}

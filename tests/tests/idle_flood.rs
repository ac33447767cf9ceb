//! A connection flood with the daemon's default limits: 5 000 idle connections (from ten
//! addresses, 500 each, under the per-client default) and a slowloris (200 connections
//! trickling a request head one byte every 500 ms) while legitimate clients make HTTP
//! requests and WebSocket echoes, every byte checked. At least 99 % of those succeed, the
//! daemon's resident memory stays within [`RSS_GROWTH_MAX`] of where it started, and the
//! handshake timeout closes every slowloris connection (and the idle ones), after which the
//! daemon counts no client connection.
//!
//! Descriptors: this process and the daemon each hold one per flood connection (5 200,
//! plus a few for the legitimate clients and the daemon's backend connections), within the
//! 20 000 `RLIMIT_NOFILE` the test machines give; the daemon's default `max_connections`
//! is then (20 000 − 128) / 2 = 9 936.

use std::{
    io::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use gateway_tests::{
    admission::{connect_from, loopback},
    data::{random_bytes, seeded_rng, Summary},
    http_backend::HttpBackend,
    http_client::{ws_echo_exchange, ws_upgrade, KeepAlive},
    process::{nofile_limits, raise_nofile_limit, rss_bytes},
    wait::{eventually, within},
    Gateway,
};
use rand::{RngCore as _, SeedableRng as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinSet,
};

const IDLE: usize = 5_000;
/// Addresses the idle connections come from (127.0.0.10 onwards): 500 each, under the
/// default `max_connections_per_ip` (1 024).
const IDLE_ADDRESSES: u8 = 10;
const SLOWLORIS: usize = 200;
/// The slowloris connections' address.
const SLOWLORIS_ADDRESS: u8 = 30;
const TRICKLE: Duration = Duration::from_millis(500);
/// `--handshake-timeout-secs`: long enough for the legitimate traffic to run while the
/// flood is open, short enough to see the slowloris closed within the test.
const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
const HTTP_REQUESTS: usize = 300;
const WS_ECHOES: usize = 100;
/// Legitimate clients at once.
const CONCURRENCY: usize = 8;
const REQUEST_BYTES: usize = 4 * 1024;
const REPLY_BYTES: usize = 16 * 1024;
const ECHO_BYTES: usize = 16 * 1024;
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors this process and the daemon each need, with room to spare.
const NOFILE_NEEDED: u64 = 12_000;
/// What the flood may add to the daemon's resident memory, about twice what was measured
/// (14 MiB on the debug build): an idle connection costs some 1.5 KiB (its task and socket
/// registration; nothing else is made before its first byte), a slowloris one about 20 KiB
/// (its HTTP connection and read buffer), and the legitimate traffic a little.
const RSS_GROWTH_MAX: u64 = 32 << 20;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One legitimate HTTP request: a random body up, a random answer down, both summaries
/// compared.
async fn http_request(addr: SocketAddr, seed: u64) -> Result<(), String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let body = random_bytes(&mut rng, REQUEST_BYTES);
    let mut client = KeepAlive::over(connect_from(loopback(1), addr).await);
    let reply = client
        .send(
            "POST",
            "/legit",
            "x.test",
            &[
                ("X-Reply-Bytes", &REPLY_BYTES.to_string()),
                ("Connection", "close"),
            ],
            &body,
        )
        .await;
    if reply.status() != Some(200) {
        return Err(format!("status {:?}", reply.status()));
    }
    if reply.header("x-request-body") != Some(Summary::of(&body).to_string().as_str()) {
        return Err("the backend got another request body".into());
    }
    if reply.header("x-reply-body") != Some(Summary::of(&reply.body).to_string().as_str())
        || reply.body.len() != REPLY_BYTES
    {
        return Err("the answer body differs from what the backend sent".into());
    }
    Ok(())
}

/// One legitimate WebSocket: random messages echoed, every byte compared.
async fn ws_echo(addr: SocketAddr, seed: u64) -> Result<(), String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (ws, _) = ws_upgrade(connect_from(loopback(1), addr).await, "x.test", "/ws", &[]).await;
    let (sent, received) = ws_echo_exchange(ws, &mut rng, ECHO_BYTES).await;
    if sent == received {
        Ok(())
    } else {
        Err(format!("sent {sent}, echoed {received}"))
    }
}

/// A slowloris connection: a request head one byte every [`TRICKLE`], never finished,
/// until the daemon closes it; returns how long that took.
async fn slowloris(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = connect_from(loopback(SLOWLORIS_ADDRESS), addr).await;
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x.test\r\nX-Slow: ")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut ticker = tokio::time::interval(TRICKLE);
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(started.elapsed()),
                Ok(_) => return Err(format!("an answer: {:?}", String::from_utf8_lossy(&buf))),
            },
            _ = ticker.tick() => {
                if stream.write_all(b"a").await.is_err() {
                    return Ok(started.elapsed());
                }
            }
        }
    }
}

/// Opens `n` idle connections to `addr` spread over [`IDLE_ADDRESSES`] addresses.
async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    let mut connecting = JoinSet::new();
    for i in 0..n {
        let from = loopback(10 + u8::try_from(i % usize::from(IDLE_ADDRESSES)).expect("fits"));
        connecting.spawn(async move { connect_from(from, addr).await });
        if connecting.len() >= 256 {
            if let Some(joined) = connecting.join_next().await {
                open.push(joined.expect("an idle connect"));
            }
        }
    }
    while let Some(joined) = connecting.join_next().await {
        open.push(joined.expect("an idle connect"));
    }
    open
}

fn client_connections(gateway: &Gateway) -> f64 {
    gateway.metrics().metric("gateway_client_connections", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_and_a_slowloris_leave_clients_served() {
    let test = "five_thousand_idle_connections_and_a_slowloris_leave_clients_served";
    if let Err(error) = raise_nofile_limit(NOFILE_NEEDED) {
        let (soft, hard) = nofile_limits().expect("read RLIMIT_NOFILE");
        panic!("{test} needs RLIMIT_NOFILE {NOFILE_NEEDED}, have {soft}/{hard}: {error}");
    }
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        // The daemon's own per-client defaults, not the harness's "off".
        .per_ip_limits()
        .handshake_timeout_secs(HANDSHAKE_TIMEOUT_SECS)
        .arg("--log-level")
        .arg("warn")
        .start();
    let addr = gateway.listen_addr();
    let baseline_rss = rss_bytes(gateway.pid());
    let mut seeds = seeded_rng(test);

    let opening = Instant::now();
    let idle = within(
        SETTLE_TIMEOUT,
        "open the idle connections",
        open_idle(addr, IDLE),
    )
    .await;
    let slowloris: Vec<_> = (0..SLOWLORIS)
        .map(|_| tokio::spawn(slowloris(addr)))
        .collect();
    let flood = (IDLE + SLOWLORIS) as f64;
    eventually(SETTLE_TIMEOUT, "the flood is accepted", || {
        let open = client_connections(&gateway);
        (open >= flood)
            .then_some(())
            .ok_or(format!("{open} client connections open"))
    })
    .await;
    let flooded_in = opening.elapsed();

    // Legitimate clients while all of it is open.
    let started = Instant::now();
    let mut ops = JoinSet::new();
    let mut results = Vec::new();
    let kinds =
        std::iter::repeat_n(true, HTTP_REQUESTS).chain(std::iter::repeat_n(false, WS_ECHOES));
    let mut peak_rss = rss_bytes(gateway.pid());
    for http in kinds {
        let seed = seeds.next_u64();
        ops.spawn(async move {
            let op = async move {
                if http {
                    http_request(addr, seed).await
                } else {
                    ws_echo(addr, seed).await
                }
            };
            // A panic in the client (a reset, a bad answer) counts as a failure too.
            match tokio::time::timeout(OP_TIMEOUT, tokio::spawn(op)).await {
                Ok(Ok(result)) => result,
                Ok(Err(panicked)) => Err(format!("failed: {panicked}")),
                Err(_) => Err(format!("no answer in {OP_TIMEOUT:?}")),
            }
        });
        if ops.len() >= CONCURRENCY {
            if let Some(done) = ops.join_next().await {
                results.push(done.expect("the op task"));
                peak_rss = peak_rss.max(rss_bytes(gateway.pid()));
            }
        }
    }
    while let Some(done) = ops.join_next().await {
        results.push(done.expect("the op task"));
    }
    let legit_in = started.elapsed();
    let open_after = client_connections(&gateway);
    peak_rss = peak_rss.max(rss_bytes(gateway.pid()));
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let total = results.len();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: flood of {flood} accepted in {flooded_in:?}; {total} legitimate operations in \
         {legit_in:?}, {} failed {failures:?}; {open_after} client connections open after them; \
         daemon RSS {} KiB at start, {} KiB at peak",
        failures.len(),
        baseline_rss >> 10,
        peak_rss >> 10,
    );
    assert!(
        failures.len() * 100 <= total,
        "more than 1 % of {total} legitimate operations failed: {failures:?}"
    );
    assert!(
        open_after >= flood,
        "the flood was closed before the legitimate traffic was done ({open_after} open): \
         raise HANDSHAKE_TIMEOUT_SECS"
    );
    let growth = peak_rss.saturating_sub(baseline_rss);
    assert!(
        growth <= RSS_GROWTH_MAX,
        "the daemon's RSS grew by {} KiB under the flood, more than {} KiB",
        growth >> 10,
        RSS_GROWTH_MAX >> 10
    );

    // The handshake timeout closes every slowloris connection (never an answer), then the
    // idle ones are gone too and the daemon counts nothing open.
    let timeout = Duration::from_secs(HANDSHAKE_TIMEOUT_SECS);
    for task in slowloris {
        let took = within(SETTLE_TIMEOUT, "a slowloris connection is closed", task)
            .await
            .expect("the slowloris task")
            .unwrap_or_else(|why| panic!("a slowloris connection got {why}"));
        assert!(
            took + TRICKLE >= timeout,
            "a slowloris connection was closed after {took:?}, before the handshake timeout"
        );
    }
    eventually(SETTLE_TIMEOUT, "every client connection closed", || {
        let open = client_connections(&gateway);
        (open == 0.0)
            .then_some(())
            .ok_or(format!("{open} client connections open"))
    })
    .await;
    drop(idle);
}

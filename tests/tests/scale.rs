//! 10 000 idle spliced tunnels open at once on the eBPF dataplane.
//!
//! Each tunnel is checked with a small random probe echoed by the backend (length + SHA-256
//! at both ends); with all of them open the gateway's eBPF maps hold two entries per tunnel
//! and the test prints the gateway's resident memory per tunnel. After every client closes,
//! the maps are empty and the gateway's descriptors are back to their baseline.
//!
//! Descriptors are the limit: the test process holds 2 per tunnel (both ends) and the gateway
//! 2 (both sockets; every spliced tunnel shares one epoll set, made at start-up by the
//! self-test, so it is part of the baseline), 20 000 each for 10 000 tunnels. The test raises
//! `RLIMIT_NOFILE` to 65 536, which the gateway inherits. Raising the hard limit needs
//! `CAP_SYS_RESOURCE`; where the test lacks it (a container whose bounding set drops it, hard
//! limit 20 000: about 9 860 tunnels), it runs as many tunnels as the hard limit allows and
//! says so on stderr, as a skip would. Ports are not a limit: one client address has about
//! 28 000 ephemeral ports per destination, and clients and the gateway's backend connections
//! go to different destinations.

use std::{collections::BTreeMap, io::Write as _, net::SocketAddr, time::Duration};

use gateway_common::names;
use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{random_bytes, read_to_eof, test_seed, Summary},
    ends::read_exact_summary,
    maps,
    process::{nofile_limits, raise_nofile_limit, rss_bytes},
    skip_unprivileged, tunnels,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, SeedableRng as _};
use tokio::{
    io::AsyncWriteExt as _,
    net::TcpStream,
    task::JoinSet,
    time::{timeout_at, Instant},
};

const TUNNELS: usize = 10_000;
/// Upgrades in flight at once while opening.
const CONNECTING: usize = 256;
/// Descriptor limit for this process and the gateway it starts.
const NOFILE_LIMIT: u64 = 65_536;
/// Descriptors the gateway holds per spliced tunnel: both sockets (the epoll set watching
/// them is shared by all tunnels).
const GATEWAY_FDS_PER_TUNNEL: usize = 2;
/// Descriptors this process holds per tunnel: the client socket and the backend's.
const TEST_FDS_PER_TUNNEL: usize = 2;
/// Descriptors left free for everything else when the tunnel count must fit a limit.
const SPARE_FDS: usize = 256;
/// Bytes of the probe each tunnel echoes.
const PROBE_BYTES: usize = 32;
/// Bound on opening and probing every tunnel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on the maps and metrics catching up with what is open or closed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_spliced_tunnels() {
    let test = "ten_thousand_idle_spliced_tunnels";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    // `Err` (with why) when the limit could not be raised and the tunnel count must fit it.
    let fixed_limit = raise_nofile_limit(NOFILE_LIMIT).err().map(|error| {
        let (_, hard) = nofile_limits().expect("read RLIMIT_NOFILE");
        raise_nofile_limit(hard).expect("raise the soft RLIMIT_NOFILE to the hard limit");
        (hard, error)
    });
    let seed = test_seed(test);

    // Echoes the probe, then holds the tunnel until the client closes it.
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        let path = conn.request.path().to_owned();
        conn.accept_upgrade().await;
        let mut probe = conn.leftover.clone();
        let missing = PROBE_BYTES.saturating_sub(probe.len());
        let mut rest = vec![0; missing];
        tokio::io::AsyncReadExt::read_exact(&mut conn.stream, &mut rest)
            .await
            .expect("backend reads the probe");
        probe.extend_from_slice(&rest);
        conn.stream
            .write_all(&probe)
            .await
            .expect("backend echoes the probe");
        let after = read_to_eof(&mut conn.stream, &[])
            .await
            .expect("backend holds the tunnel until the client's EOF");
        (path, Summary::of(&probe), after)
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .start();
    let baseline_sockets = gateway.socket_fd_count();
    let baseline_fds = gateway.fd_count();
    let baseline_rss = rss_bytes(gateway.pid());
    let tunnels = match fixed_limit {
        None => TUNNELS,
        Some((hard, error)) => {
            let hard = usize::try_from(hard).unwrap_or(usize::MAX);
            let own = maps::fd_count(std::process::id());
            let fit = (hard.saturating_sub(baseline_fds + SPARE_FDS) / GATEWAY_FDS_PER_TUNNEL)
                .min(hard.saturating_sub(own + SPARE_FDS) / TEST_FDS_PER_TUNNEL)
                .min(TUNNELS);
            // Straight to stderr, like a skip: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "REDUCED: {test}: RLIMIT_NOFILE cannot go above its hard limit {hard} \
                 ({error}; raising it needs CAP_SYS_RESOURCE): {fit} tunnels instead of {TUNNELS}"
            );
            fit
        }
    };

    let started = Instant::now();
    let addr = gateway.listen_addr();
    let mut open: Vec<TcpStream> = Vec::with_capacity(tunnels);
    let mut probes: BTreeMap<String, Summary> = BTreeMap::new();
    within(OPEN_TIMEOUT, "open and probe every tunnel", async {
        let mut connecting = JoinSet::new();
        let mut next = 0;
        while next < tunnels || !connecting.is_empty() {
            while next < tunnels && connecting.len() < CONNECTING {
                connecting.spawn(open_tunnel(addr, next, seed));
                next += 1;
            }
            let Some(joined) = connecting.join_next().await else {
                break;
            };
            let (path, stream, probe) = joined.unwrap_or_else(|error| {
                panic!(
                    "opening a tunnel failed with {} open (seed {seed}): {error}",
                    open.len()
                )
            });
            open.push(stream);
            probes.insert(path, probe);
        }
    })
    .await;
    let opened_in = started.elapsed();

    let tunnels_f = tunnels as f64;
    eventually(SETTLE_TIMEOUT, "every tunnel counted as spliced", || {
        let active = tunnels::active(&gateway, "spliced");
        (active == tunnels_f)
            .then_some(())
            .ok_or_else(|| format!("{active} spliced tunnels active"))
    })
    .await;
    assert_eq!(
        tunnels::opened(&gateway, "userspace"),
        0.0,
        "tunnels relayed instead of spliced"
    );
    eventually(SETTLE_TIMEOUT, "two map entries per tunnel", || {
        let entries = gateway.ebpf_map_entries();
        let want = 2 * tunnels;
        let wrong: Vec<String> = [names::SPLICED, names::PEERS, names::FLOWS]
            .iter()
            .filter(|name| entries.get(**name) != Some(&want))
            .map(|name| format!("{name}: {:?}", entries.get(*name)))
            .collect();
        wrong
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("want {want} each; {}", wrong.join(", ")))
    })
    .await;
    let rss = rss_bytes(gateway.pid());
    let fds = gateway.fd_count();
    let growth = rss.saturating_sub(baseline_rss);
    eprintln!(
        "{test}: {tunnels} tunnels open and probed in {opened_in:?}; gateway RSS {} KiB before, \
         {} KiB with them open: {} bytes per tunnel; gateway descriptors {baseline_fds} -> {fds}",
        baseline_rss >> 10,
        rss >> 10,
        growth / tunnels as u64
    );

    let closing = Instant::now();
    drop(open);
    // Every backend connection ends once the client's FIN reaches it; a FIN the gateway
    // never forwards leaves its tunnel open, so wait for all of them with one deadline.
    let deadline = closing + SETTLE_TIMEOUT;
    let mut echoed = BTreeMap::new();
    while echoed.len() < tunnels {
        let Ok((path, probe, after)) = timeout_at(deadline, backend.next_result()).await else {
            let stuck: Vec<&String> = probes
                .keys()
                .filter(|path| !echoed.contains_key(*path))
                .take(10)
                .collect();
            panic!(
                "{} of {tunnels} backend connections never saw their client's EOF within \
                 {SETTLE_TIMEOUT:?} of every client closing (e.g. {stuck:?}); \
                 gateway_tunnels_active{{spliced}} = {}, maps {:?} (seed {seed})",
                tunnels - echoed.len(),
                tunnels::active(&gateway, "spliced"),
                gateway.ebpf_map_entries()
            );
        };
        assert_eq!(after.len, 0, "{path}: bytes after the probe (seed {seed})");
        assert!(
            echoed.insert(path.clone(), probe).is_none(),
            "the backend saw {path} twice"
        );
    }
    assert_eq!(
        echoed, probes,
        "what the backend received and echoed, per tunnel (seed {seed})"
    );
    eventually(SETTLE_TIMEOUT, "no tunnel active", || {
        let active = tunnels::active(&gateway, "spliced");
        (active == 0.0)
            .then_some(())
            .ok_or_else(|| format!("{active} spliced tunnels active"))
    })
    .await;
    gateway.wait_tunnels_gone(baseline_sockets).await;
    eventually(
        SETTLE_TIMEOUT,
        "gateway descriptors back to baseline",
        || {
            let fds = gateway.fd_count();
            (fds == baseline_fds)
                .then_some(())
                .ok_or_else(|| format!("{fds} descriptors open, {baseline_fds} after start-up"))
        },
    )
    .await;
    eprintln!(
        "{test}: all closed and released in {:?}; gateway RSS {} KiB after",
        closing.elapsed(),
        rss_bytes(gateway.pid()) >> 10
    );
}

/// Opens tunnel `index` and checks it with a random probe the backend echoes; returns its
/// path, its open client socket and the probe's summary.
async fn open_tunnel(addr: SocketAddr, index: usize, seed: u64) -> (String, TcpStream, Summary) {
    let path = format!("/scale/{index}");
    let mut tunnel = client::raw_upgrade(addr, &path, &[]).await;
    let mut rng = StdRng::seed_from_u64(seed ^ index as u64);
    let probe = random_bytes(&mut rng, PROBE_BYTES);
    tunnel
        .stream
        .write_all(&probe)
        .await
        .unwrap_or_else(|error| panic!("{path}: client sends the probe: {error}"));
    let echoed = read_exact_summary(&mut tunnel.stream, &tunnel.leftover, PROBE_BYTES as u64)
        .await
        .unwrap_or_else(|error| panic!("{path}: client reads the echo: {error}"));
    let probe = Summary::of(&probe);
    assert_eq!(echoed, probe, "{path}: the echoed probe");
    (path, tunnel.stream, probe)
}

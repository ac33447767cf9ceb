//! A fast backend facing a slow client: the sender must be slowed down, and the kernel must not
//! pile up what the client has not read yet.
//!
//! The backend writes 512 MiB of seeded random bytes as fast as it can; the client reads at
//! ~1 MiB/s for 4 s, then at full speed to EOF. With a userspace relay TCP flow control reaches
//! the backend through the relay's buffers. With the kernel splice it does not by itself:
//! redirected skbs leave the source socket's receive accounting, so the gateway has to stop
//! redirecting past `--max-tunnel-backlog-bytes`.
//!
//! Every ~250 ms the test samples where memory is (the gateway's sockets per `ss`, the global
//! TCP memory per `/proc/net/sockstat`, `/proc/meminfo`) and how far each end got, and prints
//! the samples as a table.
//!
//! What decides is what the two ends count, exact and private to this tunnel: how far ahead
//! of the client the backend got, and how much of that no socket accounts for. Bytes waiting
//! in a psock's redirect queue are charged to no socket and not to the global TCP memory
//! either (measured: 200 MiB piled up, TCP memory +5 MiB); they show only in `MemFree` and a
//! little in `Slab`, which other processes move by as much. The global TCP check is kept as
//! a sanity bound on everything the sockets do hold.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{read_to_eof, seeded_rng, Hasher, Summary, CHUNK_BYTES},
    dataplane_tests, skip_unprivileged,
    sockstat::{kernel_tcp_memory_bytes, socket_memory, ss_tcp_sockets, MemInfo, SocketMemory},
    tunnels::GO,
    wait::within,
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, RngCore as _, SeedableRng as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    time::{Instant, MissedTickBehavior},
};

/// `--max-tunnel-backlog-bytes`: what the kernel may hold per direction of a spliced tunnel.
const BACKLOG_BYTES: u64 = 4 << 20;
/// What the backend writes after the 101; it also caps the unbounded pile-up of a build
/// without the backlog limit, where the kernel charges those bytes to nothing.
const BACKEND_BYTES: u64 = 512 << 20;
/// The client's rate in the slow phase.
const SLOW_BYTES_PER_SEC: f64 = (1u64 << 20) as f64;
const SLOW_PHASE: Duration = Duration::from_secs(4);
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Growth of the global TCP memory allowed over its value before the tunnel: the backlog
/// (4 MiB a direction) plus the buffers of the four sockets the bytes cross (backend send,
/// gateway receive and send, client receive: up to `tcp_wmem`/`tcp_rmem` max each, which
/// a slow reader's autotuning does not reach), with room for other sockets on the machine:
/// the counter is machine-wide, so other tests' transfers show in it too.
const KERNEL_TCP_GROWTH_LIMIT_BYTES: u64 = 16 * BACKLOG_BYTES;
/// Bytes written by the backend and not yet read by the client, at most: everything the
/// kernel holds for this direction of the tunnel wherever it accounts it. Same budget.
const IN_FLIGHT_LIMIT_BYTES: u64 = 16 * BACKLOG_BYTES;
/// Bytes in flight that no socket accounts for (see `Sample::off_socket`), at most, while the
/// client is slow: the backlog limit itself, with room for the skew between reading the
/// counters and running `ss`, and for the limit being checked after a redirect, not before.
const OFF_SOCKET_LIMIT_BYTES: i64 = 2 * BACKLOG_BYTES as i64;
/// What the backend may have written by the end of the slow phase: 4 MiB read by the client
/// plus what the buffers above hold. Unbounded, it wrote 200+ MiB in that time on a 2-core
/// machine.
const SLOW_PHASE_WRITTEN_LIMIT_BYTES: u64 = 64 << 20;
/// Global TCP memory growth at which the test stops the backend and fails at once. The
/// counter does not see a psock pile-up, so what keeps an unbounded build from exhausting
/// memory is [`BACKEND_BYTES`]; this catches the bytes piling up somewhere it does see.
const ABORT_TCP_GROWTH_BYTES: u64 = 1 << 30;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

/// Counters the backend, the client and the sampler share.
#[derive(Default)]
struct Progress {
    backend_written: AtomicU64,
    client_read: AtomicU64,
    /// The client is past the slow phase.
    fast: AtomicBool,
    /// The client is done: the sampler takes one last sample and stops.
    done: AtomicBool,
    /// A sample crossed [`ABORT_TCP_GROWTH_BYTES`]: the backend stops writing.
    abort: AtomicBool,
}

impl Progress {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    fn add(counter: &AtomicU64, bytes: usize) {
        counter.fetch_add(bytes as u64, Ordering::SeqCst);
    }
}

/// What the kernel's counters said before the tunnel opened.
#[derive(Clone, Copy)]
struct Baseline {
    tcp: u64,
    /// [`SkMem::charged`](gateway_tests::sockstat::SkMem::charged) over every TCP socket `ss`
    /// sees.
    sockets_charged: i64,
    meminfo: MemInfo,
}

impl Baseline {
    fn now() -> Self {
        Self {
            tcp: kernel_tcp_memory_bytes(),
            sockets_charged: SocketMemory::sum(&ss_tcp_sockets()).total.charged(),
            meminfo: MemInfo::read(),
        }
    }
}

/// The sockets a sample looks at.
#[derive(Clone, Copy)]
struct Watched {
    gateway_pid: u32,
    /// Local addresses of the client's socket and of the backend's socket of the tunnel (the
    /// backend's listener address: `ss` leaves listeners out). Not "every socket of this
    /// process": the other dataplane's test may run at the same time.
    ends: [SocketAddr; 2],
}

/// One look at the kernel and at both ends.
struct Sample {
    at: Duration,
    fast: bool,
    backend_written: u64,
    client_read: u64,
    gateway: SocketMemory,
    /// The client's socket and the backend's socket of this tunnel.
    ends: SocketMemory,
    /// Growth of the global TCP memory, and of the part of it `ss` can see on sockets.
    tcp_growth: i64,
    sockets_charged_growth: i64,
    /// Drops of `MemFree` / `MemAvailable` since the baseline, and growth of `Slab`.
    free_drop: i64,
    available_drop: i64,
    slab_growth: i64,
}

impl Sample {
    /// Blocking: runs `ss` and reads `/proc`.
    fn take(at: Duration, watched: Watched, progress: &Progress, baseline: Baseline) -> Self {
        let sockets = ss_tcp_sockets();
        let meminfo = MemInfo::read();
        let delta = |now: u64, then: u64| {
            i64::try_from(now).expect("fits i64") - i64::try_from(then).expect("fits i64")
        };
        let client_read = Progress::get(&progress.client_read);
        Self {
            at,
            fast: progress.fast.load(Ordering::SeqCst),
            // Read after the client's count; still, the backend counts a chunk only once
            // `write_all` returns, so the client may be ahead (see `in_flight`).
            backend_written: Progress::get(&progress.backend_written),
            client_read,
            gateway: SocketMemory::of(&sockets, watched.gateway_pid),
            ends: SocketMemory::sum(sockets.iter().filter(|socket| {
                socket
                    .local
                    .is_some_and(|addr| watched.ends.contains(&addr))
            })),
            tcp_growth: delta(kernel_tcp_memory_bytes(), baseline.tcp),
            sockets_charged_growth: SocketMemory::sum(&sockets).total.charged()
                - baseline.sockets_charged,
            free_drop: delta(baseline.meminfo.free, meminfo.free),
            available_drop: delta(baseline.meminfo.available, meminfo.available),
            slab_growth: delta(meminfo.slab, baseline.meminfo.slab),
        }
    }

    fn in_flight(&self) -> u64 {
        self.backend_written.saturating_sub(self.client_read)
    }

    /// Bytes in flight that no socket's `skmem` shows (the gateway's, the client's, the
    /// backend's): on the splice, what waits in a psock's queue. Approximate, as `skmem` counts
    /// truesize (payload plus skb overhead), so this undercounts a little.
    fn off_socket(&self) -> i64 {
        let on_sockets = self.gateway.held_bytes + self.ends.held_bytes;
        i64::try_from(self.in_flight()).expect("fits i64")
            - i64::try_from(on_sockets).expect("fits i64")
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn mib_signed(bytes: i64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// The samples as a table, in MiB. `off-sk`: see [`Sample::off_socket`]; `gw`: the gateway's sockets per `ss` (`held` is
/// `r + t + w + o + bl` summed, `max/sk` the largest one socket holds); `ends`: the client's and
/// the backend's sockets; `sk chg+`: growth of `r + w + f` over every TCP socket `ss` sees,
/// i.e. the part of `TCP mem+` that shows on a socket.
fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "  t ms phase  written    read in-flight off-sk | gw n   held max/sk      r      w      f \
         | ends held | sk chg+ | TCP mem+ | MemFree- | MemAvail- |  Slab+\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:>6} {:<5} {:>8.1} {:>7.1} {:>9.1} {:>6.1} | {:>4} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>6.1} \
             | {:>9.1} | {:>7.1} | {:>8.1} | {:>8.1} | {:>9.1} | {:>6.1}",
            s.at.as_millis(),
            if s.fast { "fast" } else { "slow" },
            mib(s.backend_written),
            mib(s.client_read),
            mib(s.in_flight()),
            mib_signed(s.off_socket()),
            s.gateway.sockets,
            mib(s.gateway.held_bytes),
            mib(s.gateway.max_socket_held_bytes),
            mib(s.gateway.total.rmem_alloc),
            mib(s.gateway.total.wmem_queued),
            mib_signed(s.gateway.total.forward_alloc),
            mib(s.ends.held_bytes),
            mib_signed(s.sockets_charged_growth),
            mib_signed(s.tcp_growth),
            mib_signed(s.free_drop),
            mib_signed(s.available_drop),
            mib_signed(s.slab_growth),
        );
    }
    out
}

/// Samples every [`SAMPLE_INTERVAL`] until the client is done; raises `abort` if the global
/// TCP memory grows past [`ABORT_TCP_GROWTH_BYTES`].
async fn sample_until_done(
    watched: Watched,
    progress: Arc<Progress>,
    start: Instant,
    baseline: Baseline,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let done = progress.done.load(Ordering::SeqCst);
        let shared = Arc::clone(&progress);
        let sample = tokio::task::spawn_blocking(move || {
            Sample::take(start.elapsed(), watched, &shared, baseline)
        })
        .await
        .expect("take a sample");
        if u64::try_from(sample.tcp_growth).is_ok_and(|growth| growth > ABORT_TCP_GROWTH_BYTES) {
            progress.abort.store(true, Ordering::SeqCst);
        }
        samples.push(sample);
        if done || progress.abort.load(Ordering::SeqCst) {
            return samples;
        }
    }
}

/// The backend: waits for [`GO`], writes [`BACKEND_BYTES`] (seeded) as fast as the socket
/// takes them, counting as it goes, half-closes and reads to EOF. Returns (sent, received
/// after `GO`).
async fn blast(mut conn: RawConn, seed: u64, progress: Arc<Progress>) -> (Summary, Summary) {
    conn.accept_upgrade().await;
    let mut leftover = std::mem::take(&mut conn.leftover);
    if leftover.is_empty() {
        let mut go = [0u8; 1];
        conn.stream
            .read_exact(&mut go)
            .await
            .expect("backend reads the client's go byte");
        leftover.extend_from_slice(&go);
    }
    assert_eq!(leftover[0], GO, "first byte from the client");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = Hasher::default();
    let mut chunk = vec![0; CHUNK_BYTES];
    while Progress::get(&progress.backend_written) < BACKEND_BYTES
        && !progress.abort.load(Ordering::SeqCst)
    {
        rng.fill_bytes(&mut chunk);
        conn.stream.write_all(&chunk).await.expect("backend writes");
        sent.update(&chunk);
        Progress::add(&progress.backend_written, chunk.len());
    }
    conn.stream.shutdown().await.expect("backend half-closes");
    let received = read_to_eof(&mut conn.stream, &leftover[1..])
        .await
        .expect("backend reads to EOF");
    (sent.finish(), received)
}

async fn slow_client_is_bounded(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let seed = seeded_rng(test).random();
    let progress = Arc::new(Progress::default());
    let shared = Arc::clone(&progress);
    let mut backend =
        RawBackend::start(move |conn: RawConn| blast(conn, seed, Arc::clone(&shared))).await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .arg("--max-tunnel-backlog-bytes")
        .arg(BACKLOG_BYTES.to_string())
        .start();
    let baseline_sockets = gateway.socket_fd_count();
    let baseline = Baseline::now();
    let idle = socket_memory(gateway.pid());

    let mut tunnel = within(
        STEP_TIMEOUT,
        "upgrade",
        client::raw_upgrade(gateway.listen_addr(), "/backpressure", &[]),
    )
    .await;
    assert!(
        tunnel.leftover.is_empty(),
        "the backend wrote before the go byte"
    );
    tunnel
        .stream
        .write_all(&[GO])
        .await
        .expect("client sends the go byte");
    let start = Instant::now();
    let watched = Watched {
        gateway_pid: gateway.pid(),
        ends: [
            tunnel.stream.local_addr().expect("client socket address"),
            backend.addr(),
        ],
    };
    let sampler = tokio::spawn(sample_until_done(
        watched,
        Arc::clone(&progress),
        start,
        baseline,
    ));

    // Slow phase: the next read is allowed once the bytes read so far fit the rate. The wait is
    // pacing, not waiting for readiness.
    let mut received = Hasher::default();
    let mut buf = vec![0; CHUNK_BYTES];
    let slow_end = start + SLOW_PHASE;
    while !progress.abort.load(Ordering::SeqCst) {
        let read_so_far = Progress::get(&progress.client_read);
        let allowed_at = start + Duration::from_secs_f64(read_so_far as f64 / SLOW_BYTES_PER_SEC);
        if allowed_at >= slow_end {
            tokio::time::sleep_until(slow_end).await;
            break;
        }
        tokio::time::sleep_until(allowed_at).await;
        let read = within(
            STEP_TIMEOUT,
            "client reads in the slow phase",
            tunnel.stream.read(&mut buf),
        )
        .await
        .expect("client reads");
        assert_ne!(read, 0, "end of stream in the slow phase");
        received.update(&buf[..read]);
        Progress::add(&progress.client_read, read);
    }
    let written_slow = Progress::get(&progress.backend_written);
    let read_slow = Progress::get(&progress.client_read);
    progress.fast.store(true, Ordering::SeqCst);

    // Fast phase: everything else, as fast as the client can.
    let fast = async {
        while !progress.abort.load(Ordering::SeqCst) {
            match tunnel.stream.read(&mut buf).await.expect("client reads") {
                0 => break,
                read => {
                    received.update(&buf[..read]);
                    Progress::add(&progress.client_read, read);
                }
            }
        }
    };
    within(TRANSFER_TIMEOUT, "client reads to EOF", fast).await;
    progress.done.store(true, Ordering::SeqCst);
    let samples = within(STEP_TIMEOUT, "the sampler's last sample", sampler)
        .await
        .expect("sampler task");
    let received = received.finish();
    eprintln!(
        "{test}: gateway sockets when idle: {} sockets, {:.1} MiB held\n\
         slow phase ({SLOW_PHASE:?}): backend wrote {:.1} MiB, client read {:.1} MiB\n{}",
        idle.sockets,
        mib(idle.held_bytes),
        mib(written_slow),
        mib(read_slow),
        table(&samples)
    );
    let max_tcp_growth = samples.iter().map(|s| s.tcp_growth).max().unwrap_or(0);
    // The global counter is machine-wide: other tests' sockets move it too. The bound is
    // checked where a pile-up would build, while the client is slow.
    let max_slow_tcp_growth = samples
        .iter()
        .filter(|s| !s.fast)
        .map(|s| s.tcp_growth)
        .max()
        .unwrap_or(0);
    let max_in_flight = samples.iter().map(Sample::in_flight).max().unwrap_or(0);
    let peak = |f: fn(&Sample) -> i64| samples.iter().map(f).max().unwrap_or(0);
    let peak_bytes = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let max_slow_off_socket = samples
        .iter()
        .filter(|s| !s.fast)
        .map(Sample::off_socket)
        .max()
        .unwrap_or(0);
    eprintln!(
        "{test}: peaks (MiB): in-flight {:.1} (off sockets, slow phase {:.1}), gateway sockets held {:.1} (one socket {:.1}), \
         sockets charged +{:.1}, TCP mem +{:.1} (slow phase +{:.1}), MemFree drop {:.1}, \
         MemAvailable drop {:.1}, Slab +{:.1}",
        mib(max_in_flight),
        mib_signed(max_slow_off_socket),
        mib(peak_bytes(|s| s.gateway.held_bytes)),
        mib(peak_bytes(|s| s.gateway.max_socket_held_bytes)),
        mib_signed(peak(|s| s.sockets_charged_growth)),
        mib_signed(max_tcp_growth),
        mib_signed(max_slow_tcp_growth),
        mib_signed(peak(|s| s.free_drop)),
        mib_signed(peak(|s| s.available_drop)),
        mib_signed(peak(|s| s.slab_growth)),
    );
    assert!(
        !progress.abort.load(Ordering::SeqCst),
        "aborted: global TCP memory grew by {:.1} MiB, past {:.0} MiB; the backend was stopped",
        mib_signed(max_tcp_growth),
        mib(ABORT_TCP_GROWTH_BYTES)
    );

    tunnel.stream.shutdown().await.expect("client half-closes");
    let (sent, backend_received) = backend.next_result().await;
    assert_eq!(sent.len, BACKEND_BYTES, "bytes the backend wrote");
    assert_eq!(received, sent, "bytes the client received");
    assert_eq!(
        backend_received,
        Summary::of(&[]),
        "bytes the backend received after the go byte"
    );
    let metrics = gateway.metrics();
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_opened_total",
            &[("mode", dataplane.tunnel_mode())]
        ),
        1.0,
        "the tunnel ran in mode {}:\n{}",
        dataplane.tunnel_mode(),
        metrics.text
    );

    assert!(
        written_slow < SLOW_PHASE_WRITTEN_LIMIT_BYTES,
        "the backend was not slowed down: it wrote {:.1} MiB in the {SLOW_PHASE:?} the client \
         read {:.1} MiB (limit {:.0} MiB)",
        mib(written_slow),
        mib(read_slow),
        mib(SLOW_PHASE_WRITTEN_LIMIT_BYTES)
    );
    assert!(
        max_in_flight <= IN_FLIGHT_LIMIT_BYTES,
        "up to {:.1} MiB written and not yet read (limit {:.0} MiB)",
        mib(max_in_flight),
        mib(IN_FLIGHT_LIMIT_BYTES)
    );
    assert!(
        max_slow_off_socket <= OFF_SOCKET_LIMIT_BYTES,
        "up to {:.1} MiB in flight and on no socket's accounts while the client was slow \
         (limit {:.0} MiB for --max-tunnel-backlog-bytes {BACKLOG_BYTES})",
        mib_signed(max_slow_off_socket),
        mib_signed(OFF_SOCKET_LIMIT_BYTES)
    );
    assert!(
        u64::try_from(max_slow_tcp_growth)
            .map_or(true, |growth| growth <= KERNEL_TCP_GROWTH_LIMIT_BYTES),
        "global TCP memory grew by up to {:.1} MiB in the slow phase (limit {:.0} MiB)",
        mib_signed(max_slow_tcp_growth),
        mib(KERNEL_TCP_GROWTH_LIMIT_BYTES)
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

dataplane_tests!(slow_client_is_bounded => slow_client_is_bounded_and_gets_every_byte_ebpf, slow_client_is_bounded_and_gets_every_byte_userspace);

//! Loads the embedded eBPF object, attaches the stream verdict to `SPLICED`, and owns every
//! map write. Each map is held twice ([`SharedMap`]): lookups go through a handle any
//! thread may use at once, inserts and removes through a second one behind that map's own
//! lock, held for one syscall. A tunnel's supervisor reads `FLOWS` at every step, which
//! waits for nothing, and writes `CONTROL` often, which waits at most for one other write
//! to `CONTROL`.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, Map, MapData, MapError, PerCpuArray, RingBuf, SockHash},
    programs::{ProgramError, SkSkb},
    Ebpf, EbpfError,
};
use gateway_common::{counter, names, FlowControl, FlowStats};

/// The eBPF object built by `build.rs`, embedded so the daemon is self-contained.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

/// Why the eBPF dataplane could not be set up; each variant says what to try.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot load the eBPF object: {0}; the gateway needs root or CAP_BPF + CAP_PERFMON + \
         CAP_NET_ADMIN, \
         and a kernel with BPF sockmap support (CONFIG_BPF_STREAM_PARSER, CONFIG_NET_SOCK_MSG)"
    )]
    Object(#[source] EbpfError),
    #[error("the eBPF object has no {kind} named {name}; was it built from this source tree?")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name}: cannot duplicate its descriptor: {source}")]
    Duplicate {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot load the verdict program: {source}{hint}\nverifier log:\n{log}",
        hint = permission_hint(source),
        log = verifier_log(source)
    )]
    Program {
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach the verdict program to {map}: {source}{hint}", map = names::SPLICED, hint = permission_hint(source))]
    Attach {
        #[source]
        source: ProgramError,
    },
}

fn verifier_log(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
        _ => "(none)".to_owned(),
    }
}

fn permission_hint(err: &ProgramError) -> &'static str {
    let io_error = match err {
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        ProgramError::SyscallError(e) => Some(&e.io_error),
        _ => None,
    };
    match io_error.and_then(io::Error::raw_os_error) {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (permission denied: run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
        }
        // The verifier offers `bpf_probe_read_kernel` only to programs loaded with
        // CAP_PERFMON; without it the program is refused as invalid.
        Some(libc::EINVAL) if verifier_log(err).contains("cannot use helper") => {
            " (the verdict reads TCP sequence numbers with bpf_probe_read_kernel, which needs \
             CAP_PERFMON at load time: run as root or grant CAP_PERFMON too; a kernel locked \
             down for confidentiality refuses it to everyone)"
        }
        Some(libc::EINVAL) => " (the kernel rejected it: is CONFIG_BPF_STREAM_PARSER enabled?)",
        _ => "",
    }
}

/// A tunnel the kernel would not splice.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SpliceRefused {
    #[source]
    pub source: MapWriteError,
    /// Set when the refusal came at the second `SPLICED` insert: the verdict had run on
    /// the first socket and may have redirected bytes into the other's psock. Its `SPLICED`
    /// entry is gone (no verdict runs any more), but the tunnel's `PEERS`, `FLOWS` and
    /// `CONTROL` entries stay, keeping both psocks (and what they have not sent yet) alive,
    /// until [`EbpfDataplane::settle_refused`]. `None`: nothing was left in any map.
    pub verdict_ran: Option<TunnelKeys>,
}

/// Why [`EbpfDataplane::settle_refused`] could not hand a refused tunnel to the relay.
#[derive(Debug, thiserror::Error)]
pub enum Unsettled {
    /// The verdict passed bytes to a socket's own psock queue; they go with the psock.
    #[error("the verdict passed {0} bytes to userspace before the refusal")]
    Passed(u64),
    /// Redirected bytes did not leave a psock in time (its peer does not read).
    #[error("{owed} redirected bytes were still in the kernel after {waited:?}")]
    Undelivered { owed: u64, waited: Duration },
    /// The kernel took bytes off a socket's queue that the verdict never saw (see
    /// [`EbpfDataplane::settle_refused`]).
    #[error("the kernel dropped {bytes} bytes while the tunnel left the sockmap")]
    Lost { bytes: u64 },
    #[error("reading the sockets' TCP counters: {0}")]
    Counters(#[source] io::Error),
}

/// Errors from inserting sockets. The usual one: the kernel only takes ESTABLISHED TCP
/// sockets, so a peer that half-closed during the handshake cannot be spliced.
#[derive(Debug, thiserror::Error)]
pub enum MapWriteError {
    #[error("reading socket cookie: {0}")]
    Cookie(#[source] io::Error),
    #[error("{map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> MapWriteError {
    move |source| MapWriteError::Map { map, source }
}

/// One map, opened twice, so that no lock is shared by all its users.
///
/// aya's lookups and key walks take `&self`: each is a syscall on the map's descriptor,
/// which any number of threads may make at once (the kernel does its own locking), so
/// `read` needs no lock. Its inserts and removes take `&mut self` (`BorrowMut<MapData>`),
/// and aya 0.14 has no update through a shared handle (its syscall wrappers, and
/// `MapFd::try_clone`, are private), so writes go through `write`: a second handle on the
/// same map, opened at load from a duplicate of its descriptor, behind a lock of its own
/// that is held for one syscall at a time. One map's writers never wait for another's, and
/// readers wait for nobody.
///
/// One lock used to cover all four maps, held across the eight inserts of a splice, the
/// removes of an unsplice and a walk of every key, and every supervisor step of every
/// tunnel (its `FLOWS` reads, its `CONTROL` writes) queued behind it. What is left on a
/// step is `CONTROL`'s write lock, one syscall long. A handle per tunnel would remove that
/// too, but would cost a descriptor per tunnel, where a tunnel now costs only its two
/// sockets (docs/dataplane.md, "Faults, stress and scale").
struct SharedMap<M> {
    read: M,
    write: Mutex<M>,
}

impl<M> SharedMap<M>
where
    M: TryFrom<Map, Error = MapError>,
{
    /// Takes map `name` from the object, and opens it a second time.
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, LoadError> {
        let map = ebpf
            .take_map(name)
            .ok_or(LoadError::Missing { kind: "map", name })?;
        let data = match &map {
            Map::HashMap(data) | Map::SockHash(data) => data,
            _ => {
                return Err(LoadError::Missing {
                    kind: "hash map",
                    name,
                })
            }
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| LoadError::Duplicate { name, source })?;
        let map_err = |source| LoadError::Map { name, source };
        let second = MapData::from_fd(fd)
            .and_then(Map::from_map_data)
            .map_err(map_err)?;
        Ok(Self {
            read: M::try_from(second).map_err(map_err)?,
            write: Mutex::new(M::try_from(map).map_err(map_err)?),
        })
    }
}

impl<M> SharedMap<M> {
    /// The write handle, for one syscall.
    fn write(&self) -> MutexGuard<'_, M> {
        // Each write is one syscall, so a panic cannot leave a write half done: a poisoned
        // lock is still usable.
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The maps the daemon writes, each with its own write lock (see [`SharedMap`]).
struct SpliceMaps {
    peers: SharedMap<SockHash<MapData, u64>>,
    spliced: SharedMap<SockHash<MapData, u64>>,
    flows: SharedMap<HashMap<MapData, u64, FlowStats>>,
    control: SharedMap<HashMap<MapData, u64, FlowControl>>,
}

/// The loaded and attached eBPF dataplane.
pub struct EbpfDataplane {
    maps: SpliceMaps,
    counters: PerCpuArray<MapData, u64>,
    /// Tunnels to wake on flow events (see [`super::events`]).
    pub(super) registry: super::events::Registry,
    /// The event ring, until [`EbpfDataplane::take_events`] hands it to the dispatcher.
    events: Mutex<Option<RingBuf<MapData>>>,
    /// Counter values that [`EbpfDataplane::counter`] subtracts: what the start-up
    /// self-test moved is not traffic.
    baseline: [std::sync::atomic::AtomicU64; counter::COUNT as usize],
    /// What spliced flows borrow beyond their own budget (see [`super::pool`]).
    backlog_pool: super::pool::BacklogPool,
    /// Episodes in which a flow's sender was braked, by sender: the client, the backend
    /// (`gateway_splice_brakes_total`; see `splice::supervisor`).
    brakes: [std::sync::atomic::AtomicU64; 2],
    /// The epoll set that watches every spliced socket for hang-ups (see [`super::watch`]).
    hangups: super::watch::LazyReactor,
    /// Keeps the program loaded and its attachment alive.
    _ebpf: Ebpf,
}

/// Cookies of one spliced tunnel's two sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelKeys {
    pub client: u64,
    pub backend: u64,
}

impl EbpfDataplane {
    /// Loads the object, attaches the verdict program to `SPLICED`, and takes the maps.
    pub fn load() -> Result<Self, LoadError> {
        raise_memlock_limit();
        let mut ebpf = Ebpf::load(OBJECT).map_err(LoadError::Object)?;
        let peers = SharedMap::take(&mut ebpf, names::PEERS)?;
        let spliced: SharedMap<SockHash<MapData, u64>> =
            SharedMap::take(&mut ebpf, names::SPLICED)?;
        let flows = SharedMap::take(&mut ebpf, names::FLOWS)?;
        let control = SharedMap::take(&mut ebpf, names::CONTROL)?;
        let events = take_map(&mut ebpf, names::EVENTS)?;
        let counters = take_map(&mut ebpf, names::COUNTERS)?;

        let program: &mut SkSkb = ebpf
            .program_mut(names::VERDICT_PROGRAM)
            .ok_or(LoadError::Missing {
                kind: "program",
                name: names::VERDICT_PROGRAM,
            })?
            .try_into()
            .map_err(|source| LoadError::Program { source })?;
        program
            .load()
            .map_err(|source| LoadError::Program { source })?;
        program
            .attach(spliced.read.fd())
            .map_err(|source| LoadError::Attach { source })?;

        Ok(Self {
            maps: SpliceMaps {
                peers,
                spliced,
                flows,
                control,
            },
            counters,
            registry: super::events::Registry::default(),
            events: Mutex::new(Some(events)),
            baseline: Default::default(),
            backlog_pool: super::pool::BacklogPool::default(),
            brakes: Default::default(),
            hangups: super::watch::LazyReactor::default(),
            _ebpf: ebpf,
        })
    }

    /// The kernel memory spliced flows share beyond their own budget.
    pub fn backlog_pool(&self) -> &super::pool::BacklogPool {
        &self.backlog_pool
    }

    /// The hang-up reactor a spliced tunnel registers its sockets with: made by the first
    /// tunnel, in its tokio runtime, and again if that runtime has gone.
    pub(super) fn hangup_reactor(&self) -> io::Result<std::sync::Arc<super::watch::HangupReactor>> {
        self.hangups.get()
    }

    /// Counts an episode in which the sender on side `from` (0: the client, 1: the
    /// backend) was braked.
    pub(super) fn braked(&self, from: usize) {
        if let Some(count) = self.brakes.get(from) {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Braking episodes ever, of the client's sender and of the backend's
    /// (`gateway_splice_brakes_total`).
    pub fn brakes(&self) -> [u64; 2] {
        self.brakes
            .each_ref()
            .map(|count| count.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Registers a tunnel and starts the kernel splice on both sockets.
    ///
    /// Order matters (see docs/dataplane.md): flows and peers first, which change nothing
    /// by themselves; then each socket joins `SPLICED`, which starts the verdict on it. Both
    /// peers are already redirect targets when either socket starts being spliced, so no
    /// segment is ever passed to userspace for lack of a peer.
    ///
    /// Each direction may run `budget_bytes` ahead of its destination before it pauses
    /// (see [`FlowControl`]).
    ///
    /// Each insert takes its map's write lock for itself only: the order above is the
    /// order of the syscalls, which no lock is needed for, and another tunnel's entries
    /// have other keys (socket cookies), so nothing it does in between can matter.
    pub fn splice(
        &self,
        client: &impl AsRawFd,
        backend: &impl AsRawFd,
        budget_bytes: u64,
    ) -> Result<TunnelKeys, SpliceRefused> {
        self.splice_interleaved(client, backend, budget_bytes, || {})
    }

    /// [`Self::splice`], calling `between_inserts` after the first socket joined `SPLICED`
    /// and before the second does: for tests of a refusal in that window (a peer's FIN
    /// landing there, which the kernel then refuses).
    #[doc(hidden)]
    pub fn splice_interleaved(
        &self,
        client: &impl AsRawFd,
        backend: &impl AsRawFd,
        budget_bytes: u64,
        between_inserts: impl FnOnce(),
    ) -> Result<TunnelKeys, SpliceRefused> {
        use gateway_common::direction::{BACKEND_TO_CLIENT, CLIENT_TO_BACKEND};
        let refused = |source| SpliceRefused {
            source,
            verdict_ran: None,
        };
        let keys = TunnelKeys {
            client: super::sockopt::socket_cookie(client)
                .map_err(|e| refused(MapWriteError::Cookie(e)))?,
            backend: super::sockopt::socket_cookie(backend)
                .map_err(|e| refused(MapWriteError::Cookie(e)))?,
        };
        let maps = &self.maps;
        let mut between_inserts = Some(between_inserts);
        // How many sockets joined `SPLICED`: from the first, its verdict runs.
        let mut joined = 0;
        let result = (|| {
            for key in [keys.client, keys.backend] {
                maps.control
                    .write()
                    .insert(key, FlowControl::new(budget_bytes), 0)
                    .map_err(map_err(names::CONTROL))?;
            }
            for (key, direction) in [
                (keys.client, CLIENT_TO_BACKEND),
                (keys.backend, BACKEND_TO_CLIENT),
            ] {
                maps.flows
                    .write()
                    .insert(key, FlowStats::new(direction), 0)
                    .map_err(map_err(names::FLOWS))?;
            }
            for (key, peer) in [
                (keys.client, backend.as_raw_fd()),
                (keys.backend, client.as_raw_fd()),
            ] {
                maps.peers
                    .write()
                    .insert(key, peer, 0)
                    .map_err(map_err(names::PEERS))?;
            }
            for (key, sock) in [
                (keys.client, client.as_raw_fd()),
                (keys.backend, backend.as_raw_fd()),
            ] {
                if joined == 1 {
                    if let Some(between) = between_inserts.take() {
                        between();
                    }
                }
                maps.spliced
                    .write()
                    .insert(key, sock, 0)
                    .map_err(map_err(names::SPLICED))?;
                joined += 1;
            }
            Ok(())
        })();
        let Err(source) = result else {
            return Ok(keys);
        };
        if joined == 0 {
            remove_all(maps, keys);
            return Err(SpliceRefused {
                source,
                verdict_ran: None,
            });
        }
        // Stop the verdict; the rest waits for `settle_refused` (see `verdict_ran`).
        let _ = maps.spliced.write().remove(&keys.client);
        Err(SpliceRefused {
            source,
            verdict_ran: Some(keys),
        })
    }

    /// Ends a refusal that came after the verdict had run ([`SpliceRefused::verdict_ran`]),
    /// so that the relay can carry the tunnel with every byte in order, or says why it
    /// cannot. Blocks: first for an RCU grace period, after which no verdict that started
    /// before the refusal is still running (the program runs and its skb is queued under
    /// `rcu_read_lock`), so `FLOWS` holds every byte it redirected; then until those bytes
    /// have left the destination's psock for its send queue, at most `limit`: removing a
    /// psock drops what it holds unsent. `before`: each socket's counters (client's,
    /// backend's) read before the splice. Returns what the kernel moved (client→backend,
    /// backend→client); however it ends, the tunnel has then left every map.
    ///
    /// Taking a socket out of a sockmap while segments arrive can drop one: a softirq
    /// already in the verdict's `sk_data_ready` takes the skb off the receive queue, then
    /// finds the program (or the psock) gone, and frees it (`sk_psock_verdict_recv`; seen
    /// here as one 64 KiB segment missing in about 1 in 60 refusals mid-stream). Nothing
    /// counts it, but the socket's own counters show it: more was taken off its queue than
    /// the verdict redirected. That is checked last, after a second grace period, and
    /// reported as [`Unsettled::Lost`].
    pub fn settle_refused(
        &self,
        keys: TunnelKeys,
        client: &impl AsRawFd,
        backend: &impl AsRawFd,
        before: [super::sockopt::TcpCounters; 2],
        limit: Duration,
    ) -> Result<[u64; 2], Unsettled> {
        use super::sockopt::{tcp_counters, tcp_counters_settled};
        let socks = [client.as_raw_fd(), backend.as_raw_fd()];
        wait_for_rcu_grace_period();
        let (up, down) = read_stats(&self.maps, keys);
        // Per socket: what its verdict redirected, and what was redirected to it.
        let redirected = [up.bytes, down.bytes];
        let delivered = || {
            let started = Instant::now();
            loop {
                let mut owed = 0;
                for to in 0..2 {
                    let written = tcp_counters(&socks[to])
                        .map_err(Unsettled::Counters)?
                        .bytes_written();
                    let sent = written.saturating_sub(before[to].bytes_written());
                    owed += redirected[1 - to].saturating_sub(sent);
                }
                if owed == 0 {
                    return Ok(());
                }
                let waited = started.elapsed();
                if waited >= limit {
                    return Err(Unsettled::Undelivered { owed, waited });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let passed = up.passed_bytes + down.passed_bytes;
        let settled = if passed > 0 {
            Err(Unsettled::Passed(passed))
        } else {
            delivered()
        };
        remove_all(&self.maps, keys);
        settled?;
        wait_for_rcu_grace_period();
        for side in 0..2 {
            let now = tcp_counters_settled(&socks[side]).map_err(Unsettled::Counters)?;
            let taken = now
                .bytes_consumed()
                .saturating_sub(before[side].bytes_consumed());
            let expected = redirected[side] + u64::from(now.fin_received);
            if taken > expected {
                return Err(Unsettled::Lost {
                    bytes: taken - expected,
                });
            }
        }
        Ok(redirected)
    }

    /// Stops the splice and forgets the tunnel; returns its final per-direction stats
    /// (client→backend, backend→client). Idempotent.
    pub fn unsplice(&self, keys: TunnelKeys) -> (FlowStats, FlowStats) {
        self.registry.remove([keys.client, keys.backend]);
        let stats = read_stats(&self.maps, keys);
        remove_all(&self.maps, keys);
        stats
    }

    /// Live per-direction stats of a tunnel (client→backend, backend→client).
    pub fn flow_stats(&self, keys: TunnelKeys) -> (FlowStats, FlowStats) {
        read_stats(&self.maps, keys)
    }

    /// Entries in `PEERS`, `SPLICED`, `FLOWS` and `CONTROL`, in that order: two each per
    /// live tunnel.
    pub fn entry_counts(&self) -> [usize; 4] {
        let maps = &self.maps;
        [
            maps.peers.read.keys().count(),
            maps.spliced.read.keys().count(),
            maps.flows.read.keys().count(),
            maps.control.read.keys().count(),
        ]
    }

    /// Publishes the daemon's side of a flow's control (see [`FlowControl`]); `cookie` is
    /// the flow's source socket. Waits only for another write to `CONTROL` (one syscall).
    pub fn set_control(&self, cookie: u64, control: FlowControl) -> Result<(), MapWriteError> {
        self.maps
            .control
            .write()
            .insert(cookie, control, 0)
            .map_err(map_err(names::CONTROL))
    }

    /// The event ring, once: the caller runs [`super::events::dispatch`] on it.
    pub fn take_events(&self) -> Option<RingBuf<MapData>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Wakes `notify` whenever the verdict asks for attention on either flow of `keys`.
    pub fn watch_flows(&self, keys: TunnelKeys, notify: &std::sync::Arc<tokio::sync::Notify>) {
        self.registry.insert([keys.client, keys.backend], notify);
    }

    /// One of [`gateway_common::counter`], summed over CPUs, since the last
    /// [`EbpfDataplane::reset_counters`].
    pub fn counter(&self, index: u32) -> u64 {
        let base = self
            .baseline
            .get(index as usize)
            .map_or(0, |b| b.load(std::sync::atomic::Ordering::Relaxed));
        self.raw_counter(index).saturating_sub(base)
    }

    pub(super) fn raw_counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// Makes every counter read zero from now on (after the start-up self-test).
    pub fn reset_counters(&self) {
        for (index, base) in self.baseline.iter().enumerate() {
            base.store(
                self.raw_counter(index as u32),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// All counters, in [`gateway_common::counter`] order.
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        std::array::from_fn(|i| self.counter(i as u32))
    }
}

/// A tunnel's `FLOWS` entries (client→backend, backend→client); zero when absent. Takes
/// no lock.
fn read_stats(maps: &SpliceMaps, keys: TunnelKeys) -> (FlowStats, FlowStats) {
    (
        maps.flows.read.get(&keys.client, 0).unwrap_or_default(),
        maps.flows.read.get(&keys.backend, 0).unwrap_or_default(),
    )
}

/// Removes a tunnel from every map, splice first so the verdict stops before its peers go
/// (each remove under its own map's lock, in this order).
fn remove_all(maps: &SpliceMaps, keys: TunnelKeys) {
    for key in [keys.client, keys.backend] {
        let _ = maps.spliced.write().remove(&key);
    }
    for key in [keys.client, keys.backend] {
        let _ = maps.peers.write().remove(&key);
        let _ = maps.flows.write().remove(&key);
        let _ = maps.control.write().remove(&key);
    }
}

/// Waits until every CPU has left any RCU read-side section it was in: `membarrier(2)`'s
/// `MEMBARRIER_CMD_GLOBAL` is `synchronize_rcu()` on a machine with more than one CPU. A
/// kernel with `nohz_full` refuses that command; a verdict runs for microseconds, so
/// 50 ms then stands in for the grace period.
fn wait_for_rcu_grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: the command takes no pointer; flags and cpu_id are 0.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(LoadError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memcg and
/// ignore it. Raising it is harmless either way.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, sync::mpsc, sync::Arc, time::Duration};

    use super::*;

    /// What neither the per-step reads nor another map's writes may wait for: a write in
    /// progress on `FLOWS` or on `CONTROL` (a splice or unsplice of another tunnel, or its
    /// supervisor publishing its control). Each step runs on a thread of its own while the
    /// test holds a write lock; a step that waited for it would never report back (the
    /// deadline only turns that hang into a failure; nothing is timed).
    #[test]
    fn reads_and_other_maps_do_not_wait_for_a_write_in_progress() {
        if std::env::var("GATEWAY_TEST_UNPRIVILEGED").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED (GATEWAY_TEST_UNPRIVILEGED=1): needs the eBPF dataplane");
            return;
        }
        let ebpf = Arc::new(EbpfDataplane::load().expect("load the eBPF dataplane"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let pair = || {
            let far = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            (far, listener.accept().expect("accept").0)
        };
        let ((_client_far, client), (_backend_far, backend)) = (pair(), pair());
        let keys = ebpf.splice(&client, &backend, 1 << 20).expect("splice");
        let fresh = (
            FlowStats::new(gateway_common::direction::CLIENT_TO_BACKEND),
            FlowStats::new(gateway_common::direction::BACKEND_TO_CLIENT),
        );

        let unblocked = |what: &str, step: fn(&EbpfDataplane, TunnelKeys)| {
            let (done, finished) = mpsc::channel();
            let ebpf = ebpf.clone();
            let step = std::thread::spawn(move || {
                step(&ebpf, keys);
                let _ = done.send(());
            });
            if let Err(mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(Duration::from_secs(10))
            {
                panic!("{what} waited for a write lock");
            }
            if let Err(panic) = step.join() {
                std::panic::resume_unwind(panic);
            }
        };
        {
            let _writing = ebpf.maps.flows.write();
            unblocked("flow_stats during a FLOWS write", |ebpf, keys| {
                assert_eq!(ebpf.flow_stats(keys).0.bytes, 0);
            });
            unblocked("set_control during a FLOWS write", |ebpf, keys| {
                ebpf.set_control(keys.client, FlowControl::new(2 << 20))
                    .expect("set control");
            });
            unblocked("entry_counts during a FLOWS write", |ebpf, _| {
                assert_eq!(ebpf.entry_counts(), [2, 2, 2, 2]);
            });
        }
        {
            let _writing = ebpf.maps.control.write();
            unblocked("flow_stats during a CONTROL write", |ebpf, keys| {
                assert_eq!(ebpf.flow_stats(keys).1.bytes, 0);
            });
        }
        assert_eq!(ebpf.flow_stats(keys), fresh);
        assert_eq!(
            ebpf.maps
                .control
                .read
                .get(&keys.client, 0)
                .expect("control"),
            FlowControl::new(2 << 20)
        );
        ebpf.unsplice(keys);
        assert_eq!(ebpf.entry_counts(), [0, 0, 0, 0]);
    }
}

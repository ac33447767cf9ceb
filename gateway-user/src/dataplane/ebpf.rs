//! Loads the embedded eBPF object, attaches the stream verdict to `SPLICED`, and owns every
//! map write. All inserts and deletes go through [`SpliceMaps`] behind one mutex: one owner,
//! and the lock is only taken on tunnel setup and teardown, never per byte.

use std::{io, os::fd::AsRawFd, sync::Mutex};

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf, SockHash},
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

/// A tunnel the kernel would not splice, and whether it can still be relayed.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SpliceRefused {
    #[source]
    pub source: MapWriteError,
    /// Bytes the verdict had already redirected before the refusal (only possible when the
    /// second `SPLICED` insert fails). If not zero they may be lost with the peer's psock,
    /// so the tunnel cannot be relayed and must be reset.
    pub bytes_redirected: u64,
}

impl SpliceRefused {
    /// Whether nothing moved in the kernel, so the userspace relay can carry the tunnel.
    pub fn can_relay(&self) -> bool {
        self.bytes_redirected == 0
    }
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

struct SpliceMaps {
    peers: SockHash<MapData, u64>,
    spliced: SockHash<MapData, u64>,
    flows: HashMap<MapData, u64, FlowStats>,
    control: HashMap<MapData, u64, FlowControl>,
}

/// The loaded and attached eBPF dataplane.
pub struct EbpfDataplane {
    maps: Mutex<SpliceMaps>,
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
        let peers = take_map(&mut ebpf, names::PEERS)?;
        let spliced: SockHash<MapData, u64> = take_map(&mut ebpf, names::SPLICED)?;
        let flows = take_map(&mut ebpf, names::FLOWS)?;
        let control = take_map(&mut ebpf, names::CONTROL)?;
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
            .attach(spliced.fd())
            .map_err(|source| LoadError::Attach { source })?;

        Ok(Self {
            maps: Mutex::new(SpliceMaps {
                peers,
                spliced,
                flows,
                control,
            }),
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
    pub fn splice(
        &self,
        client: &impl AsRawFd,
        backend: &impl AsRawFd,
        budget_bytes: u64,
    ) -> Result<TunnelKeys, SpliceRefused> {
        use gateway_common::direction::{BACKEND_TO_CLIENT, CLIENT_TO_BACKEND};
        let refused = |source| SpliceRefused {
            source,
            bytes_redirected: 0,
        };
        let keys = TunnelKeys {
            client: super::sockopt::socket_cookie(client)
                .map_err(|e| refused(MapWriteError::Cookie(e)))?,
            backend: super::sockopt::socket_cookie(backend)
                .map_err(|e| refused(MapWriteError::Cookie(e)))?,
        };
        let mut maps = self.lock();
        let result = (|| {
            for key in [keys.client, keys.backend] {
                maps.control
                    .insert(key, FlowControl::new(budget_bytes), 0)
                    .map_err(map_err(names::CONTROL))?;
            }
            let flows = &mut maps.flows;
            flows
                .insert(keys.client, FlowStats::new(CLIENT_TO_BACKEND), 0)
                .map_err(map_err(names::FLOWS))?;
            flows
                .insert(keys.backend, FlowStats::new(BACKEND_TO_CLIENT), 0)
                .map_err(map_err(names::FLOWS))?;
            maps.peers
                .insert(keys.client, backend.as_raw_fd(), 0)
                .map_err(map_err(names::PEERS))?;
            maps.peers
                .insert(keys.backend, client.as_raw_fd(), 0)
                .map_err(map_err(names::PEERS))?;
            maps.spliced
                .insert(keys.client, client.as_raw_fd(), 0)
                .map_err(map_err(names::SPLICED))?;
            maps.spliced
                .insert(keys.backend, backend.as_raw_fd(), 0)
                .map_err(map_err(names::SPLICED))
        })();
        if let Err(source) = result {
            let moved = |key| {
                maps.flows
                    .get(&key, 0)
                    .map(|f: FlowStats| f.bytes)
                    .unwrap_or(0)
            };
            let bytes_redirected = moved(keys.client) + moved(keys.backend);
            remove_all(&mut maps, keys);
            return Err(SpliceRefused {
                source,
                bytes_redirected,
            });
        }
        Ok(keys)
    }

    /// Stops the splice and forgets the tunnel; returns its final per-direction stats
    /// (client→backend, backend→client). Idempotent.
    pub fn unsplice(&self, keys: TunnelKeys) -> (FlowStats, FlowStats) {
        self.registry.remove([keys.client, keys.backend]);
        let mut maps = self.lock();
        let stats = read_stats(&maps, keys);
        remove_all(&mut maps, keys);
        stats
    }

    /// Live per-direction stats of a tunnel (client→backend, backend→client).
    pub fn flow_stats(&self, keys: TunnelKeys) -> (FlowStats, FlowStats) {
        read_stats(&self.lock(), keys)
    }

    /// Entries in `PEERS`, `SPLICED`, `FLOWS` and `CONTROL`, in that order: two each per
    /// live tunnel.
    pub fn entry_counts(&self) -> [usize; 4] {
        let maps = self.lock();
        [
            maps.peers.keys().count(),
            maps.spliced.keys().count(),
            maps.flows.keys().count(),
            maps.control.keys().count(),
        ]
    }

    /// Publishes the daemon's side of a flow's control (see [`FlowControl`]); `cookie` is
    /// the flow's source socket.
    pub fn set_control(&self, cookie: u64, control: FlowControl) -> Result<(), MapWriteError> {
        self.lock()
            .control
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

    fn lock(&self) -> std::sync::MutexGuard<'_, SpliceMaps> {
        // A panic while holding the lock leaves the maps consistent (each call is a
        // sequence of independent syscalls), so a poisoned lock is still usable.
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A tunnel's `FLOWS` entries (client→backend, backend→client); zero when absent.
fn read_stats(maps: &SpliceMaps, keys: TunnelKeys) -> (FlowStats, FlowStats) {
    (
        maps.flows.get(&keys.client, 0).unwrap_or_default(),
        maps.flows.get(&keys.backend, 0).unwrap_or_default(),
    )
}

/// Removes a tunnel from every map, splice first so the verdict stops before its peers go.
fn remove_all(maps: &mut SpliceMaps, keys: TunnelKeys) {
    for key in [keys.client, keys.backend] {
        let _ = maps.spliced.remove(&key);
    }
    for key in [keys.client, keys.backend] {
        let _ = maps.peers.remove(&key);
        let _ = maps.flows.remove(&key);
        let _ = maps.control.remove(&key);
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

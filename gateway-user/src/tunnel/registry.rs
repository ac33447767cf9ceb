//! The live tunnels, for `/tunnels`: who, where, how carried, bytes each way, age and idle
//! time. A tunnel registers when it opens and leaves when it closes (one lock each); the
//! byte counts are read when asked, from the relay's counters or the eBPF flow stats, so
//! the data path never writes here.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::dataplane::clock::{monotonic_coarse_ns, since_ns};
use crate::{
    dataplane::{EbpfDataplane, TunnelKeys},
    health::{BackendHealth, Lease},
    metrics::Mode,
};

/// Who a tunnel connects, as `/tunnels` and the close log name them.
#[derive(Clone, Debug)]
pub struct Peers {
    pub client: SocketAddr,
    pub backend: SocketAddr,
    pub pool: String,
    pub settings: String,
}

/// Every live tunnel.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// One live tunnel.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub peers: Peers,
    opened: Instant,
    opened_at: SystemTime,
    /// Set once the handoff is done, and again when a relayed tunnel is promoted to the
    /// splice.
    carried: ArcSwapOption<Carried>,
    /// Its backend went down and `on_backend_down = "drain"` will close it.
    pub draining: Arc<AtomicBool>,
}

/// How a tunnel's bytes are carried, and where to read how many moved.
#[derive(Debug)]
struct Carried {
    mode: Mode,
    /// Bytes delivered in userspace at the handoff: client→backend, backend→client.
    early: [u64; 2],
    meter: Meter,
}

enum Meter {
    Relay(Arc<RelayMeter>),
    Spliced(Arc<EbpfDataplane>, TunnelKeys),
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Relay(meter) => f.debug_tuple("Relay").field(meter).finish(),
            Self::Spliced(_, keys) => f.debug_tuple("Spliced").field(keys).finish(),
        }
    }
}

/// What the relay counts as it copies.
#[derive(Debug)]
pub struct RelayMeter {
    /// Client→backend, backend→client.
    pub bytes: [AtomicU64; 2],
    /// On the [`monotonic_coarse_ns`] clock.
    pub last_activity_ns: AtomicU64,
}

impl Default for RelayMeter {
    fn default() -> Self {
        Self {
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            last_activity_ns: AtomicU64::new(monotonic_coarse_ns()),
        }
    }
}

/// One row of `/tunnels`.
#[derive(Clone, Debug, Serialize)]
pub struct TunnelReport {
    pub id: u64,
    pub client: String,
    pub backend: String,
    pub pool: String,
    pub settings: String,
    /// `spliced`, `userspace`, or `opening` during the handoff.
    pub mode: &'static str,
    pub client_to_backend_bytes: u64,
    pub backend_to_client_bytes: u64,
    pub opened_unix: u64,
    pub age_secs: f64,
    pub idle_secs: f64,
    pub draining: bool,
}

impl Registry {
    /// Registers a tunnel, with the lease that counts it on its backend; it leaves the
    /// registry, and its backend's count, when the guard is dropped.
    pub fn open(self: &Arc<Self>, peers: Peers, lease: Lease) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            peers,
            opened: Instant::now(),
            opened_at: SystemTime::now(),
            carried: ArcSwapOption::empty(),
            draining: Arc::default(),
        });
        self.lock().insert(id, entry.clone());
        Registered {
            registry: self.clone(),
            entry,
            lease,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many live tunnels there are by mode (`spliced`, `userspace`, `opening`) and
    /// state (`open`, `draining`); reads no byte counts.
    pub fn counts(&self) -> HashMap<(&'static str, &'static str), u64> {
        let mut counts = HashMap::new();
        for entry in self.lock().values() {
            let mode = entry
                .carried
                .load()
                .as_ref()
                .map_or("opening", |c| c.mode.as_str());
            let state = if entry.draining.load(Ordering::Relaxed) {
                "draining"
            } else {
                "open"
            };
            *counts.entry((mode, state)).or_insert(0) += 1;
        }
        counts
    }

    /// Every live tunnel, oldest first.
    pub fn reports(&self) -> Vec<TunnelReport> {
        let entries: Vec<Arc<Entry>> = self.lock().values().cloned().collect();
        let mut reports: Vec<TunnelReport> = entries.iter().map(|e| e.report()).collect();
        reports.sort_by_key(|r| r.id);
        reports
    }
}

/// A tunnel's one handle on the bookkeeping around it: its row in `/tunnels` and its count
/// on its backend. Dropping it undoes both.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    pub entry: Arc<Entry>,
    lease: Lease,
}

impl Registered {
    /// The backend it is counted on (and whose health it watches).
    pub fn backend(&self) -> &Arc<BackendHealth> {
        self.lease.backend()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.id);
    }
}

impl Entry {
    /// The tunnel is relayed; `meter` is what the relay counts into.
    pub fn relayed(&self, early: [u64; 2], meter: Arc<RelayMeter>) {
        self.carried.store(Some(Arc::new(Carried {
            mode: Mode::Userspace,
            early,
            meter: Meter::Relay(meter),
        })));
    }

    /// The tunnel is spliced with `keys`.
    pub fn spliced(&self, early: [u64; 2], ebpf: Arc<EbpfDataplane>, keys: TunnelKeys) {
        self.carried.store(Some(Arc::new(Carried {
            mode: Mode::Spliced,
            early,
            meter: Meter::Spliced(ebpf, keys),
        })));
    }

    fn report(&self) -> TunnelReport {
        let age = self.opened.elapsed();
        let carried = self.carried.load_full();
        let (mode, bytes, idle) = match carried.as_deref() {
            None => ("opening", [0, 0], age),
            Some(carried) => {
                let (moved, idle) = match &carried.meter {
                    Meter::Relay(meter) => (
                        [
                            meter.bytes[0].load(Ordering::Relaxed),
                            meter.bytes[1].load(Ordering::Relaxed),
                        ],
                        since_ns(meter.last_activity_ns.load(Ordering::Relaxed)),
                    ),
                    Meter::Spliced(ebpf, keys) => {
                        let (up, down) = ebpf.flow_stats(*keys);
                        let last = up.last_activity_ns.max(down.last_activity_ns);
                        let idle = if last == 0 {
                            age
                        } else {
                            since_ns(last).min(age)
                        };
                        ([up.bytes, down.bytes], idle)
                    }
                };
                (
                    carried.mode.as_str(),
                    [moved[0] + carried.early[0], moved[1] + carried.early[1]],
                    idle,
                )
            }
        };
        TunnelReport {
            id: self.id,
            client: self.peers.client.to_string(),
            backend: self.peers.backend.to_string(),
            pool: self.peers.pool.clone(),
            settings: self.peers.settings.clone(),
            mode,
            client_to_backend_bytes: bytes[0],
            backend_to_client_bytes: bytes[1],
            opened_unix: self
                .opened_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            age_secs: age.as_secs_f64(),
            idle_secs: idle.min(age).max(Duration::ZERO).as_secs_f64(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }
}

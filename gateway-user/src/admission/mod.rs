//! Who may connect, and how often a client may upgrade: the limits a connection meets as
//! it is accepted, before any byte of it is read.
//!
//! - **All client connections** (every listener, tunnels included; not the admin
//!   listener's): at most `max_connections`, one atomic counter.
//! - **Per client** (an IPv4 address or an IPv6 /64, [`ClientKey`]): at most
//!   `max_connections_per_ip` open, and `upgrades_per_ip_per_sec` WebSocket upgrades a
//!   second after a burst of `upgrade_burst_per_ip` (a token bucket, [`bucket`]).
//!
//! A connection over a limit is refused with a fixed answer ([`refuse`]); an upgrade over
//! the rate gets a `429` from the proxy. The per-client state lives in a sharded map
//! (`dashmap`): an accept locks one shard of 4 × cores, so listeners on different cores do
//! not contend. An entry exists while its client has a connection open, or while its
//! bucket is refilling after upgrades (at most `burst / rate` seconds). The map is swept
//! whenever it has doubled since the last sweep: refilled clients without a connection are
//! forgotten, and if more than [`MAX_REFILLING_CLIENTS`] are still refilling they are all
//! forgotten (losing a rate is the safe way to fail; losing a connection count is not). So
//! it never holds more than 2 × (`max_connections` + [`MAX_REFILLING_CLIENTS`]) entries, of
//! about 40 bytes each.
//!
//! The limits come from the snapshot ([`Limits`], made with it), so a reload applies them
//! to the connections and upgrades that start afterwards; connections already open stay.

mod accept;
mod bucket;
mod key;
pub mod nofile;
mod refuse;

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dashmap::{mapref::entry::Entry, DashMap};

pub use self::{
    accept::{Accepted, Acceptor, Reserve, Socket},
    key::ClientKey,
    refuse::{refuse, Refused},
};
use crate::{
    config::{defaults::MAX_CONNECTIONS_FD_RESERVE, Global},
    metrics::Metrics,
};

/// Clients kept only for their refilling upgrade bucket (no connection open) past which
/// a sweep forgets them all.
pub const MAX_REFILLING_CLIENTS: usize = 65_536;

/// The map is swept when it holds more than this many clients and twice as many as after
/// the last sweep.
const SWEEP_FLOOR: usize = 1024;

/// The limits in force: `[global]` of one snapshot, with its defaults resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u64,
    /// `None`: no per-client connection limit.
    pub max_connections_per_ip: Option<u64>,
    /// `None`: no upgrade rate.
    upgrade_rate: Option<bucket::Rate>,
}

impl Limits {
    /// `global`'s limits; without `max_connections`, (the soft `RLIMIT_NOFILE` −
    /// [`MAX_CONNECTIONS_FD_RESERVE`]) / 2, read now (after start-up raised it).
    pub fn of(global: &Global) -> Self {
        let max_connections = global.max_connections.unwrap_or_else(|| {
            let soft = nofile::limits().map_or(1024, |(soft, _)| soft);
            (soft.saturating_sub(MAX_CONNECTIONS_FD_RESERVE) / 2).max(1)
        });
        Self {
            max_connections,
            max_connections_per_ip: Some(global.max_connections_per_ip).filter(|&n| n > 0),
            upgrade_rate: bucket::Rate::new(
                global.upgrades_per_ip_per_sec,
                global.upgrade_burst_per_ip,
            ),
        }
    }
}

/// One client's entry.
#[derive(Clone, Copy, Debug, Default)]
struct Client {
    /// Its connections open now.
    conns: u64,
    /// Its upgrade bucket ([`bucket::Rate::take`]); 0 before its first upgrade.
    tat_ns: u64,
}

/// The admission state every client listener shares.
#[derive(Debug)]
pub struct Admission {
    /// Client connections open now, tunnels included.
    open: AtomicU64,
    clients: DashMap<ClientKey, Client>,
    /// Entries in `clients` (`DashMap::len` locks every shard).
    tracked: AtomicUsize,
    /// `tracked` past which the next new client sweeps the map.
    sweep_at: AtomicUsize,
    sweeping: AtomicBool,
    /// Whether the last connection was refused for the global limit: its warning is logged
    /// once per run of refusals.
    at_limit: AtomicBool,
    /// The zero of the buckets' clock.
    epoch: Instant,
    metrics: Metrics,
    /// The descriptor the client listeners give up to answer `503` when there is none left.
    pub reserve: Arc<Reserve>,
    /// Refused connections waiting for their client's request before they close.
    pub lingering: Arc<tokio::sync::Semaphore>,
}

impl Admission {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            open: AtomicU64::new(0),
            clients: DashMap::new(),
            tracked: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(SWEEP_FLOOR),
            sweeping: AtomicBool::new(false),
            at_limit: AtomicBool::new(false),
            epoch: Instant::now(),
            metrics,
            reserve: Reserve::open(),
            lingering: Arc::new(tokio::sync::Semaphore::new(refuse::LINGERING_MAX)),
        }
    }

    /// Client connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Clients in the per-client map now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Admits a connection from `ip` under `limits`: a permit that counts it until it is
    /// dropped (with the tunnel, if the connection becomes one), or why not (counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Permit, Refused> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            if !self.at_limit.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "at the connection limit: new client connections get 503 (closed on \
                     https) until some close"
                );
            }
            return Err(self.refused(Refused::GlobalLimit));
        }
        let key = ClientKey::from(ip);
        let mut new = false;
        let admitted = match self.clients.entry(key) {
            Entry::Occupied(mut entry) => {
                let client = entry.get_mut();
                match limits.max_connections_per_ip {
                    Some(max) if client.conns >= max => false,
                    _ => {
                        client.conns += 1;
                        true
                    }
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Client {
                    conns: 1,
                    tat_ns: 0,
                });
                new = true;
                true
            }
        };
        if !admitted {
            self.open.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(client = %key, "per-client connection limit reached; 503");
            return Err(self.refused(Refused::PerIpLimit));
        }
        if self.at_limit.swap(false, Ordering::Relaxed) {
            tracing::info!("below the connection limit again");
        }
        if new {
            let tracked = self.tracked.fetch_add(1, Ordering::Relaxed) + 1;
            if tracked > self.sweep_at.load(Ordering::Relaxed) {
                self.sweep();
            }
        }
        Ok(Permit {
            admission: self.clone(),
            key,
        })
    }

    fn refused(&self, why: Refused) -> Refused {
        self.metrics.connection_refused(why.as_str());
        why
    }

    /// Takes one upgrade token of `client` under `limits`; `Err` is how long until the
    /// next one (at least 1 s, as `Retry-After` counts in whole seconds).
    pub fn upgrade(&self, client: ClientKey, limits: &Limits) -> Result<(), Duration> {
        let Some(rate) = limits.upgrade_rate else {
            return Ok(());
        };
        let now = self.now_ns();
        // The connection asking holds a permit, so its entry exists.
        let Some(mut entry) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        match rate.take(entry.tat_ns, now) {
            Ok(tat) => {
                entry.tat_ns = tat;
                Ok(())
            }
            Err(wait) => Err(wait.max(Duration::from_secs(1))),
        }
    }

    /// Forgets clients with no connection whose bucket is full again; if more than
    /// [`MAX_REFILLING_CLIENTS`] are left without a connection, forgets them too.
    fn sweep(&self) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        let now = self.now_ns();
        let mut refilling = 0usize;
        self.clients.retain(|_, client| {
            let keep = client.conns > 0 || !bucket::full(client.tat_ns, now);
            if keep && client.conns == 0 {
                refilling += 1;
            }
            keep
        });
        if refilling > MAX_REFILLING_CLIENTS {
            tracing::warn!(
                refilling,
                "too many clients with a refilling upgrade bucket and no connection: their \
                 upgrade rates are forgotten"
            );
            self.clients.retain(|_, client| client.conns > 0);
        }
        let left = self.clients.len();
        self.tracked.store(left, Ordering::Relaxed);
        self.sweep_at
            .store((left * 2).max(SWEEP_FLOOR), Ordering::Relaxed);
        self.sweeping.store(false, Ordering::Release);
    }

    fn release(&self, key: ClientKey) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Entry::Occupied(mut entry) = self.clients.entry(key) {
            let client = entry.get_mut();
            client.conns = client.conns.saturating_sub(1);
            if client.conns == 0 && bucket::full(client.tat_ns, self.now_ns()) {
                entry.remove();
                // Saturating: a sweep may have stored the map's length after this entry
                // left it and before this count, which must then not wrap below 0.
                let _ = self
                    .tracked
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
            }
        }
    }
}

/// One admitted client connection, counted until dropped.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    key: ClientKey,
}

impl Permit {
    /// The client, as the per-client limits count it.
    pub fn client(&self) -> ClientKey {
        self.key
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.key);
    }
}

/// The backlog for a client listener's `listen(2)`: `configured`, else
/// `net.core.somaxconn` (as Envoy and Go take it), else 4096 (its default since Linux 5.4).
/// A configured value above `somaxconn` is logged: the kernel caps it.
pub fn listen_backlog(configured: Option<u32>) -> u32 {
    let somaxconn = nofile::somaxconn();
    match (configured, somaxconn) {
        (Some(backlog), Some(cap)) if backlog > cap => {
            tracing::warn!(
                listen_backlog = backlog,
                somaxconn = cap,
                "listen_backlog is above net.core.somaxconn, which the kernel caps it at; \
                 raise the sysctl to use it"
            );
            backlog
        }
        (Some(backlog), _) => backlog,
        (None, Some(cap)) => cap,
        (None, None) => 4096,
    }
}

#[cfg(test)]
mod tests;

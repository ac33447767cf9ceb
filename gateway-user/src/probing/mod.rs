//! Active health probes (control path): one prober task per backend of the configuration
//! served, each running its settings' probe (or Azure's default one) and recording what it
//! finds in the backend's [`crate::health::BackendHealth`], which the data path reads.

mod probe;
mod prober;
mod spec;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use tokio_util::sync::CancellationToken;

pub use self::spec::ProbeSpec;
use crate::{
    health::{BackendKey, Health},
    snapshot::Upstreams,
    tls::ClientConfig,
};

/// The probers of the configuration served.
#[derive(Debug)]
pub struct Probers {
    /// Whether pool/settings pairs without a `probe` get Azure's default one.
    default_probes: bool,
    /// Each probed backend's prober, stopped by its token.
    running: Mutex<HashMap<BackendKey, CancellationToken>>,
    /// Parent of every prober's token: dropping the probers stops them all.
    stop: CancellationToken,
    /// System roots, for https probes of http settings (built on first use).
    system_roots: OnceLock<Option<Arc<ClientConfig>>>,
}

impl Probers {
    pub fn new(default_probes: bool) -> Self {
        Self {
            default_probes,
            running: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            system_roots: OnceLock::new(),
        }
    }

    /// Makes the tracked and probed backends those of `upstreams` (see
    /// [`Health::publish`]): each gets a prober running its probe (restarted, so a changed
    /// probe applies; its state and streak stay), and backends no longer in `upstreams` are
    /// marked removed and forgotten. Must run inside the runtime.
    pub fn reconcile(&self, health: &Health, upstreams: &Upstreams) {
        let mut specs = HashMap::new();
        for upstream in upstreams.values() {
            for backend in upstream.backends() {
                let spec = ProbeSpec::for_backend(upstream, backend, self.default_probes, || {
                    self.system_roots()
                });
                specs.insert(backend.health.key.clone(), (backend.health.clone(), spec));
            }
        }
        health.publish(specs.values().map(|(backend, _)| backend.clone()));
        let mut running = self.lock();
        for (_, prober) in running.drain() {
            prober.cancel();
        }
        for (key, (backend, spec)) in specs {
            backend.set_probe(spec.as_ref().map(|spec| spec.name.clone()));
            if let Some(spec) = spec {
                let stop = self.stop.child_token();
                tokio::spawn(prober::run(backend, spec, stop.clone()));
                running.insert(key, stop);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendKey, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn system_roots(&self) -> Option<Arc<ClientConfig>> {
        self.system_roots
            .get_or_init(|| match crate::tls::system_client_config() {
                Ok(config) => Some(config),
                Err(error) => {
                    tracing::warn!(%error, "https probes of http backend settings cannot verify certificates: no system roots");
                    None
                }
            })
            .clone()
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

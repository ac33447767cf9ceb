//! Which dataplane carries upgraded tunnels: the kernel splice (eBPF sockmap) or the
//! userspace relay, chosen once at start-up from `--dataplane`.

pub mod ebpf;
pub mod events;
pub mod sockopt;

use std::{fmt, sync::Arc};

pub use ebpf::{EbpfDataplane, LoadError, SpliceRefused, TunnelKeys};

/// What the operator asked for with `--dataplane`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataplaneMode {
    /// Load eBPF; if that fails, log why once and relay in userspace.
    Auto,
    /// Load eBPF or refuse to start.
    Ebpf,
    /// Never load eBPF; relay every tunnel in userspace.
    Userspace,
}

/// The dataplane actually in use.
#[derive(Clone)]
pub enum Dataplane {
    Ebpf(Arc<EbpfDataplane>),
    Userspace,
}

impl Dataplane {
    /// Sets up the dataplane `mode` asks for.
    pub fn start(mode: DataplaneMode) -> Result<Self, LoadError> {
        match mode {
            DataplaneMode::Userspace => Ok(Self::Userspace),
            DataplaneMode::Ebpf => Ok(Self::loaded(EbpfDataplane::load()?)),
            DataplaneMode::Auto => match EbpfDataplane::load() {
                Ok(ebpf) => Ok(Self::loaded(ebpf)),
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "eBPF dataplane unavailable; WebSocket tunnels will be relayed in userspace"
                    );
                    Ok(Self::Userspace)
                }
            },
        }
    }

    /// Wraps a loaded dataplane and starts its event dispatcher (needs a tokio runtime).
    fn loaded(ebpf: EbpfDataplane) -> Self {
        let ebpf = Arc::new(ebpf);
        if let Some(ring) = ebpf.take_events() {
            tokio::spawn(events::dispatch(ebpf.clone(), ring));
        }
        Self::Ebpf(ebpf)
    }

    /// The loaded eBPF dataplane, if any.
    pub fn ebpf(&self) -> Option<&Arc<EbpfDataplane>> {
        match self {
            Self::Ebpf(ebpf) => Some(ebpf),
            Self::Userspace => None,
        }
    }
}

impl fmt::Display for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ebpf(_) => "ebpf",
            Self::Userspace => "userspace",
        })
    }
}

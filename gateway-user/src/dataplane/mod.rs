//! Which dataplane carries upgraded tunnels: the kernel splice (eBPF sockmap) or the
//! userspace relay, chosen once at start-up from `--dataplane`.

pub mod clock;
pub mod ebpf;
pub mod events;
pub mod pool;
pub mod selftest;
pub mod sockio;
pub mod sockopt;
pub mod splice;
mod watch;

use std::{fmt, sync::Arc};

pub use ebpf::{EbpfDataplane, LoadError, SpliceRefused, TunnelKeys, Unsettled};

use crate::config::DataplaneMode;

/// The dataplane actually in use.
#[derive(Clone)]
pub enum Dataplane {
    Ebpf(Arc<EbpfDataplane>),
    Userspace,
}

/// Why the eBPF dataplane is not in use, when it was asked for.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the start-up self-test of the kernel splice failed: {0}")]
    SelfTest(selftest::SelfTestError),
}

impl Dataplane {
    /// Sets up the dataplane `mode` asks for. eBPF must also pass a start-up self-test
    /// ([`selftest`]): a real tunnel on loopback with a checksum, half-closes and a
    /// flow-control pause. Returns the dataplane and, in words, why it was chosen.
    pub async fn start(mode: DataplaneMode) -> Result<(Self, String), StartError> {
        match mode {
            DataplaneMode::Userspace => Ok((Self::Userspace, "--dataplane userspace".to_owned())),
            DataplaneMode::Ebpf => {
                let dataplane = Self::checked().await?;
                Ok((dataplane, "eBPF loaded and self-test passed".to_owned()))
            }
            DataplaneMode::Auto => match Self::checked().await {
                Ok(dataplane) => Ok((dataplane, "eBPF loaded and self-test passed".to_owned())),
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "eBPF dataplane unavailable; WebSocket tunnels will be relayed in userspace"
                    );
                    Ok((Self::Userspace, err.to_string()))
                }
            },
        }
    }

    async fn checked() -> Result<Self, StartError> {
        let dataplane = Self::loaded(EbpfDataplane::load()?);
        if let Self::Ebpf(ebpf) = &dataplane {
            selftest::run(ebpf).await.map_err(StartError::SelfTest)?;
            ebpf.reset_counters();
            tracing::info!("kernel splice self-test passed");
        }
        Ok(dataplane)
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

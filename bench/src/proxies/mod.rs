//! The proxies under test, each a child process started with settings a fair operator
//! would pick, and stopped (and checked for an early death) at the end.
//!
//! nginx and HAProxy get a listening socket the bench bound itself and passed down, so no
//! port is ever raced for and connections queue in the kernel from the first moment; a
//! proxy is ready once a real upgrade request went through it. The gateway binds port 0
//! itself and says where in its ready line.

mod child;
mod gateway;
mod haproxy;
mod listener;
mod nginx;
mod probe;
mod program;

#[cfg(test)]
mod echo_backend;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;

use self::child::Supervised;
use crate::{
    machine,
    model::{PathKind, PathSetup},
    procstat,
};

/// What every proxy is started with.
pub struct ProxyConfig<'a> {
    /// The gateway binary (release build).
    pub gateway_bin: &'a Path,
    /// A private directory for configs, pid files and logs.
    pub work_dir: &'a Path,
    /// Where every proxy forwards.
    pub backend: SocketAddr,
    /// Connection limits are sized for this many concurrent tunnels.
    pub max_tunnels: usize,
    /// Extra `gateway run` arguments (experiments: `--max-tunnel-backlog-bytes`, ...).
    pub gateway_args: &'a [String],
}

/// One path's proxy, running (or nothing, for [`PathKind::Direct`]).
pub struct Proxy {
    kind: PathKind,
    addr: SocketAddr,
    setup: PathSetup,
    /// `None` for the direct path.
    child: Option<Supervised>,
}

/// What starting one kind of proxy yields.
struct Started {
    child: Supervised,
    addr: SocketAddr,
    version: String,
    settings: String,
}

impl Proxy {
    /// Starts the path's proxy (nothing for Direct) and returns once it accepts connections
    /// and forwards to the backend.
    pub async fn start(kind: PathKind, cfg: &ProxyConfig<'_>) -> anyhow::Result<Proxy> {
        // Children inherit the limit; proxies that size themselves from it (HAProxy) see
        // the real ceiling.
        let nofile = machine::raise_nofile_limit().context("raise RLIMIT_NOFILE")?;
        let started = match kind {
            PathKind::Direct => {
                return Ok(Proxy {
                    kind,
                    addr: cfg.backend,
                    setup: PathSetup {
                        path: kind,
                        version: None,
                        settings: "no proxy: clients connect straight to the backend".to_owned(),
                    },
                    child: None,
                })
            }
            PathKind::GatewayEbpf => gateway::start(cfg, gateway::Dataplane::Ebpf).await,
            PathKind::GatewayUserspace => gateway::start(cfg, gateway::Dataplane::Userspace).await,
            PathKind::Nginx => nginx::start(cfg, nofile).await,
            PathKind::Haproxy => haproxy::start(cfg, nofile, haproxy::Splice::Off).await,
            PathKind::HaproxySplice => haproxy::start(cfg, nofile, haproxy::Splice::Auto).await,
        }
        .with_context(|| format!("start {}", kind.label()))?;
        Ok(Proxy {
            kind,
            addr: started.addr,
            setup: PathSetup {
                path: kind,
                version: Some(started.version),
                settings: started.settings,
            },
            child: Some(started.child),
        })
    }

    pub fn kind(&self) -> PathKind {
        self.kind
    }

    /// Where clients connect: the proxy's listener, or the backend for Direct.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's processes right now (the one started and all its descendants, e.g.
    /// nginx workers); empty for Direct or once it is gone.
    pub fn pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map_or_else(Vec::new, |child| procstat::process_tree(child.pid()))
    }

    /// Version and the settings that matter, for the report.
    pub fn setup(&self) -> PathSetup {
        self.setup.clone()
    }

    /// Stops the proxy (SIGTERM, then SIGKILL after a few seconds) and reaps it. An error if
    /// it had died before, with the tail of its logs.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.child {
            Some(child) => child.stop().await,
            None => Ok(()),
        }
    }
}

//! The gateway daemon as a library: `gateway::start` binds, loads the dataplane, and serves.
//!
//! The modules fall in three wings, and imports run one way, down this list
//! (`docs/architecture.md` has the rule, its exceptions, and the walk of one tunnel):
//!
//! - **control**: [`runtime`] (start, shutdown), [`admin`], [`reload`], [`generation`]
//!   (prepare and commit what is served), [`probing`], [`cli`], [`privileges`];
//! - **data**: [`proxy`] (inbound HTTP and upgrades), [`shared`] (the root state lent to
//!   it), [`snapshot`], [`route`], [`upstream`] (outbound), [`tunnel`] (a tunnel's life and
//!   the relay), [`health`], [`tls`], [`body`], [`admission`] (connection limits, the
//!   upgrade rate, accept loops);
//! - **kernel**: [`dataplane`] (program, maps, splice, epoll watch, self-test);
//! - and the leaves every wing reads: [`config`], [`metrics`].

mod admin;
mod admission;
mod body;
pub mod cli;
pub mod dataplane;
/// For the fuzz targets of `fuzz/` only: the crate-private parsers, re-exported.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod generation;
mod health;
mod metrics;
pub mod privileges;
mod probing;
mod proxy;
mod reload;
mod route;
mod runtime;
mod shared;
mod snapshot;
#[cfg(test)]
mod test_support;
mod tls;
mod tunnel;
mod upstream;

/// The configuration: a crate of its own (`gateway-config`), which imports nothing of the
/// daemon.
pub use gateway_config as config;

pub use crate::{
    config::Config,
    generation::StartError,
    reload::Trigger,
    runtime::{start, Running},
};

//! The gateway's tunnels as its metrics count them.

use std::time::Duration;

use crate::{wait::eventually, Gateway};

/// Both `mode` labels of the tunnel metrics.
pub const MODES: [&str; 2] = ["spliced", "userspace"];

/// How long closed tunnels may take to leave `gateway_tunnels_active`.
const INACTIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// `gateway_tunnels_active{mode}`.
pub fn active(gateway: &Gateway, mode: &str) -> f64 {
    gateway
        .metrics()
        .metric("gateway_tunnels_active", &[("mode", mode)])
}

/// `gateway_tunnels_opened_total{mode}`.
pub fn opened(gateway: &Gateway, mode: &str) -> f64 {
    gateway
        .metrics()
        .metric("gateway_tunnels_opened_total", &[("mode", mode)])
}

/// Waits until `gateway_tunnels_active` is 0 for every mode: each closed tunnel was counted
/// as closed.
pub async fn wait_none_active(gateway: &Gateway) {
    eventually(INACTIVE_TIMEOUT, "no tunnel active", || {
        let metrics = gateway.metrics();
        for mode in MODES {
            let active = metrics.exported("gateway_tunnels_active", &[("mode", mode)])?;
            if active != 0.0 {
                return Err(format!("{active} {mode} tunnels active"));
            }
        }
        Ok(())
    })
    .await;
}

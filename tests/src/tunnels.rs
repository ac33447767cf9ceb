//! The gateway's tunnels as its metrics count them (and as its splice maps hold them).

use std::time::Duration;

use crate::{wait::eventually, Dataplane, Gateway};

/// The byte a test client sends once its tunnel has opened ([`wait_opened`]), and its
/// backend waits for before sending: the backend's first bytes then meet a tunnel that is in
/// place instead of racing the handoff.
pub const GO: u8 = b'g';

/// Both `mode` labels of the tunnel metrics.
pub const MODES: [&str; 2] = ["spliced", "userspace"];

/// How long closed tunnels may take to leave `gateway_tunnels_active`.
const INACTIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a tunnel may take to open once its client has the 101.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

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

/// `gateway_spliced_bytes_total{direction}`: bytes the verdict redirected (`direction` is
/// `client_to_backend` or `backend_to_client`).
pub fn spliced_bytes(gateway: &Gateway, direction: &str) -> f64 {
    gateway
        .metrics()
        .metric("gateway_spliced_bytes_total", &[("direction", direction)])
}

/// The entries of the splice maps (`SPLICED`, `PEERS`, `FLOWS`) on the eBPF dataplane, each
/// checked not empty: spliced tunnels are in every one. Nothing on the userspace dataplane.
pub fn splice_map_entries(gateway: &Gateway, dataplane: Dataplane) -> Vec<(String, usize)> {
    if dataplane != Dataplane::Ebpf {
        return Vec::new();
    }
    let entries: Vec<(String, usize)> = gateway.ebpf_map_entries().into_iter().collect();
    assert!(
        entries.iter().all(|(_, count)| *count > 0),
        "spliced tunnels are in every splice map: {entries:?}"
    );
    entries
}

/// Waits until the gateway has opened `count` tunnels in all, then asserts that every one
/// opened in `dataplane`'s mode.
///
/// A test of the splice that half-closes, resets or floods must wait for this before it
/// does: the handoff takes a socket into the sockmap only while it is established and its
/// receive queue runs empty, so a FIN or a flood that beats the handoff rightly sends the
/// tunnel to the relay, and the test would then not be testing the splice.
pub async fn wait_opened(gateway: &Gateway, dataplane: Dataplane, count: f64) {
    eventually(OPEN_TIMEOUT, "tunnels opened", || {
        let metrics = gateway.metrics();
        let mut opened = 0.0;
        for mode in MODES {
            opened += metrics.exported("gateway_tunnels_opened_total", &[("mode", mode)])?;
        }
        (opened >= count)
            .then_some(())
            .ok_or_else(|| format!("{opened} of {count} tunnels opened"))
    })
    .await;
    let metrics = gateway.metrics();
    let mode = dataplane.tunnel_mode();
    assert_eq!(
        metrics.metric("gateway_tunnels_opened_total", &[("mode", mode)]),
        count,
        "every tunnel opened {mode}:\n{}",
        metrics.text
    );
}

/// Asserts that the verdict redirected some of the `sent` bytes that went `direction`, and
/// no more than that: the kernel carried them, not the relay.
pub fn assert_spliced(gateway: &Gateway, direction: &str, sent: u64) {
    let spliced = spliced_bytes(gateway, direction);
    assert!(
        spliced > 0.0 && spliced <= sent as f64,
        "{spliced} bytes spliced {direction}, expected some of the {sent} sent"
    );
}

//! Harness for the end-to-end tests: the real `gateway` binary, started as a child process
//! between real clients and real backends on `127.0.0.1:0`.
//!
//! - [`gateway`]: start the daemon, wait for its ready line, kill it on drop.
//! - [`config`]: its configuration file, typed (listeners, pools, settings, rules, probes).
//! - [`ports`]: ports reserved for binds the gateway makes itself, and for dead backends.
//! - [`admin`]: the admin listener's `/backends` and `/tunnels`, read from their JSON.
//! - [`admission`]: clients from chosen loopback addresses, and the gateway's `503` refusal.
//! - [`backend`]: a WebSocket echo backend and raw-TCP backends driven by a closure.
//! - [`client`]: WebSocket and raw-TCP clients.
//! - [`data`]: seeded random payloads and length + SHA-256 summaries of byte streams.
//! - [`pattern`]: a stream whose every byte says where it belongs, checked by position.
//! - [`health`]: a backend whose probe answers switch, and the backend health tests' clients.
//! - [`http`]: just enough HTTP/1.1 to write upgrades by hand and read responses.
//! - [`http_backend`]: a named keep-alive HTTP and WebSocket backend that reports who answered.
//! - [`http_client`]: keep-alive requests and WebSocket clients with any `Host` and cookie.
//! - [`metrics`]: fetch and parse the admin `/metrics` page.
//! - [`tls`]: test certificates (rcgen), TLS backends' server configs, TLS clients.
//! - [`maps`]: the gateway's eBPF maps and file descriptors, read through `/proc`.
//! - [`wait`]: deadlines and polling, so no test sleeps for readiness.
//! - [`busy`]: WebSocket tunnels kept busy both ways until told to finish, bytes summed.
//! - [`ends`]: reading and writing until a stream ends, and how it ended (EOF or an error).
//! - [`exchange`]: one end of a raw tunnel sends random bytes, half-closes, reads to EOF.
//! - [`oneshot`]: `gateway check` and refused runs: exit code and output; scratch files.
//! - [`netns`]: a backend host behind a veth pair in its own network namespace, to cut off.
//! - [`process`]: a process's resident memory and this process's descriptor limit.
//! - [`process_backend`]: a backend in a separate OS process (python3), to kill.
//! - [`reload`]: `POST /reload`, the reload's log line and metrics, a client connecting all along.
//! - [`tunnels`]: the gateway's open tunnels as its metrics count them.
//! - [`traffic`]: random traffic for one side of a tunnel (sizes, pauses, slow reads, half-close).
//! - [`bulk_backend`]: a backend streaming large answers, counting what it wrote.
//! - [`slow`]: clients that stop reading their answers or trickle their request bodies.

pub mod admin;
pub mod admission;
pub mod backend;
pub mod bulk_backend;
pub mod busy;
pub mod client;
pub mod config;
pub mod data;
pub mod flood;
pub mod gateway;
pub mod health;
pub mod held;
pub mod http;
pub mod http_backend;
pub mod http_client;
pub mod maps;
pub mod metrics;
pub mod pattern;
pub mod ports;
pub mod slow;
pub mod sockstat;
pub mod tls;
pub mod wait;

pub mod ends;
pub mod exchange;
pub mod netns;
pub mod oneshot;
pub mod process;
pub mod process_backend;
pub mod reload;
pub mod traffic;
pub mod tunnels;
pub mod ws_echo;

use std::io::Write as _;

pub use gateway::{Dataplane, Gateway, GatewayBuilder};

/// Environment variable that turns tests needing the eBPF dataplane into reported skips.
pub const UNPRIVILEGED_ENV: &str = "GATEWAY_TEST_UNPRIVILEGED";

/// Whether the test `name`, which runs the gateway with `dataplane`, must be skipped because
/// `GATEWAY_TEST_UNPRIVILEGED=1`. Prints the skip to stderr: a test is never skipped silently.
pub fn skip_unprivileged(dataplane: Dataplane, name: &str) -> bool {
    let unprivileged = std::env::var(UNPRIVILEGED_ENV).is_ok_and(|value| value == "1");
    let skip = unprivileged && dataplane == Dataplane::Ebpf;
    if skip {
        // Straight to the process's stderr: libtest captures `eprintln!` of passing tests,
        // and a skip must show in a normal run.
        let _ = writeln!(std::io::stderr(), "SKIPPED ({UNPRIVILEGED_ENV}=1): {name}");
    }
    skip
}

/// Declares one `#[tokio::test]` per dataplane for `case`, an `async fn(Dataplane, &str)`
/// taking the dataplane and the test name:
/// `dataplane_tests!(half_close => half_close_ebpf, half_close_userspace);`
#[macro_export]
macro_rules! dataplane_tests {
    ($case:ident => $ebpf:ident, $userspace:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $ebpf() {
            $case($crate::Dataplane::Ebpf, stringify!($ebpf)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $userspace() {
            $case($crate::Dataplane::Userspace, stringify!($userspace)).await;
        }
    };
}

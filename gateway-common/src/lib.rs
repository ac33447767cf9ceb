//! Types shared by the eBPF programs (`gateway-ebpf`) and the daemon (`gateway-user`).
//!
//! Everything here is `#[repr(C)]` with explicit, padding-free fields so both sides agree
//! on the layout byte for byte.
#![no_std]

/// Names of the maps and programs in the eBPF object, so neither side spells them twice.
pub mod names {
    /// `SOCKHASH` keyed by a *source* socket's cookie; the value is the socket that bytes
    /// arriving on the source are redirected to. No program is attached to it.
    pub const PEERS: &str = "PEERS";
    /// `SOCKHASH` keyed by a socket's own cookie; the stream-verdict program is attached to
    /// it, so inserting a socket here is what starts the kernel splice for that socket.
    pub const SPLICED: &str = "SPLICED";
    /// `HASH` of [`crate::FlowStats`] keyed by the source socket's cookie.
    pub const FLOWS: &str = "FLOWS";
    /// `PERCPU_ARRAY` of `u64` indexed by [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// The `sk_skb/stream_verdict` program.
    pub const VERDICT_PROGRAM: &str = "splice_verdict";
}

/// Capacity of the socket maps: two sockets per tunnel.
pub const MAX_SPLICED_SOCKETS: u32 = 131_072;

/// Direction of a flow, stored in [`FlowStats::direction`].
pub mod direction {
    /// Bytes arriving on the client socket, redirected to the backend socket.
    pub const CLIENT_TO_BACKEND: u32 = 0;
    /// Bytes arriving on the backend socket, redirected to the client socket.
    pub const BACKEND_TO_CLIENT: u32 = 1;
}

/// Indexes into the per-CPU `COUNTERS` array: every decision the verdict program makes.
pub mod counter {
    /// Segments redirected to the peer socket.
    pub const REDIRECTED_SEGMENTS: u32 = 0;
    /// Bytes redirected from a client socket to its backend socket.
    pub const BYTES_CLIENT_TO_BACKEND: u32 = 1;
    /// Bytes redirected from a backend socket to its client socket.
    pub const BYTES_BACKEND_TO_CLIENT: u32 = 2;
    /// Segments passed to the socket's own receive queue because no flow is registered
    /// for it (left for userspace to read; never dropped).
    pub const PASSED_NO_FLOW: u32 = 3;
    /// Segments passed to the socket's own receive queue because the peer was missing
    /// from `PEERS` (the redirect helper refused; left for userspace, never dropped).
    pub const PASSED_REDIRECT_FAILED: u32 = 4;
    /// Bytes in segments passed to userspace (either reason above).
    pub const PASSED_BYTES: u32 = 5;
    /// Zero-length segments (a FIN without payload) dropped instead of redirected: the
    /// kernel's redirect worker treats a 0-byte send as a broken pipe on the destination.
    pub const DROPPED_EMPTY_SEGMENTS: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;
}

/// Per-direction statistics of one spliced tunnel, kept by the verdict program and keyed
/// by the source socket's cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Bytes redirected from the source socket to its peer.
    pub bytes: u64,
    /// Segments (skbs) redirected.
    pub segments: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of the last redirected segment;
    /// 0 until the first one.
    pub last_activity_ns: u64,
    /// One of [`direction`].
    pub direction: u32,
    /// Reserved, always 0; keeps the struct free of implicit padding.
    pub reserved: u32,
}

impl FlowStats {
    /// A fresh entry for a flow in `direction`.
    pub const fn new(direction: u32) -> Self {
        Self {
            bytes: 0,
            segments: 0,
            last_activity_ns: 0,
            direction,
            reserved: 0,
        }
    }
}

// SAFETY: `FlowStats` is `repr(C)`, `Copy`, made only of integers, and has no padding
// (3 × u64 + 2 × u32 = 32 bytes, 8-byte aligned), so every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowStats {}

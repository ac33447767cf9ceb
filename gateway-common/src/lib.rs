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
    /// `HASH` of [`crate::FlowControl`] keyed by the source socket's cookie; written only
    /// by the daemon.
    pub const CONTROL: &str = "CONTROL";
    /// `RINGBUF` of [`crate::FlowEvent`]: the verdict asks the daemon for attention.
    pub const EVENTS: &str = "EVENTS";
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
///
/// This module is the one list of the program's counters: each index below, and in
/// [`TABLE`] the metric the daemon exports it as ([`FAMILIES`]: name and help) with its
/// label. A new counter is a constant here, its entry in [`TABLE`] and a larger [`COUNT`];
/// the compile-time checks below refuse a table that disagrees. The eBPF program uses the
/// constants only, so none of the text reaches it.
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
    /// Segments passed to userspace because their flow was paused (backlog over budget,
    /// or waiting for userspace to forward earlier passed bytes).
    pub const PASSED_PAUSED: u32 = 7;
    /// Times a flow went from redirecting to paused.
    pub const PAUSES: u32 = 8;
    /// Times a paused flow resumed redirecting.
    pub const RESUMES: u32 = 9;
    /// Events that did not fit in the `EVENTS` ring buffer.
    pub const EVENTS_LOST: u32 = 10;
    /// Segments that repeated bytes the verdict had already seen: a retransmission that
    /// partly overlaps data already received reaches the verdict whole (`tcp_read_skb`
    /// ignores sequence numbers), so the repeated head is cut off (or the segment dropped
    /// when every byte is old) before it is redirected or passed.
    pub const OVERLAP_SEGMENTS: u32 = 11;
    /// Bytes cut off by [`OVERLAP_SEGMENTS`].
    pub const OVERLAP_BYTES: u32 = 12;
    /// Segments whose sequence numbers made no sense (unreadable, a length that disagrees
    /// with `end_seq - seq`, a gap after the bytes seen so far) or whose repeated head
    /// could not be cut off. The flow is marked ([`crate::FlowStats::seq_state`]) and the
    /// daemon resets the tunnel rather than deliver a stream it cannot vouch for.
    pub const SEQ_ANOMALIES: u32 = 13;
    /// Number of counters.
    pub const COUNT: u32 = 14;

    /// A Prometheus counter family the daemon exports some of the counters as.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Family {
        /// Metric name, without the `_total` the exposition adds.
        pub name: &'static str,
        pub help: &'static str,
        /// The label that tells the family's counters apart (`None`: a single counter).
        pub label: Option<&'static str>,
    }

    /// Where one counter goes in `/metrics`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Export {
        /// Which counter: one of the constants above.
        pub index: u32,
        /// Its family, an index into [`FAMILIES`].
        pub family: usize,
        /// Its value of the family's label (`Some` exactly when the family has one).
        pub label: Option<&'static str>,
    }

    /// Places in [`FAMILIES`].
    mod family {
        pub const SPLICED_BYTES: usize = 0;
        pub const VERDICTS: usize = 1;
        pub const PAUSES: usize = 2;
        pub const RESUMES: usize = 3;
        pub const OVERLAP_BYTES: usize = 4;
        pub const SEQ_ANOMALIES: usize = 5;
        pub const EVENTS_LOST: usize = 6;
        pub const PASSED_BYTES: usize = 7;
    }

    /// The families the counters are exported as, in the order `/metrics` prints them.
    pub const FAMILIES: [Family; 8] = [
        Family {
            name: "gateway_spliced_bytes",
            help: "Bytes redirected between client and backend by the kernel splice, by \
                   direction",
            label: Some("direction"),
        },
        Family {
            name: "gateway_splice_verdicts",
            help: "Segments seen by the splice verdict program, by outcome (redirected; passed \
                   to userspace because no flow or no peer was registered; or dropped because \
                   empty, i.e. a bare FIN)",
            label: Some("outcome"),
        },
        Family {
            name: "gateway_splice_pauses",
            help: "Times a spliced flow paused, at its backlog budget or on a failed redirect \
                   (segments then wait in the sender's socket until the gateway forwards them)",
            label: None,
        },
        Family {
            name: "gateway_splice_resumes",
            help: "Times a paused flow resumed splicing",
            label: None,
        },
        Family {
            name: "gateway_splice_overlap_bytes",
            help: "Bytes the kernel handed the splice verdict a second time (a retransmission \
                   overlapping bytes already received) and the verdict cut off",
            label: None,
        },
        Family {
            name: "gateway_splice_sequence_anomalies",
            help: "Segments whose TCP sequence numbers the splice verdict could not vouch \
                   for; their tunnels are reset",
            label: None,
        },
        Family {
            name: "gateway_splice_events_lost",
            help: "Flow events that did not fit in the eBPF ring buffer (every tunnel is then \
                   checked)",
            label: None,
        },
        Family {
            name: "gateway_splice_passed_bytes",
            help: "Bytes the splice verdict program left for userspace instead of redirecting",
            label: None,
        },
    ];

    const fn export(index: u32, family: usize, label: &'static str) -> Export {
        Export {
            index,
            family,
            label: Some(label),
        }
    }

    const fn single(index: u32, family: usize) -> Export {
        Export {
            index,
            family,
            label: None,
        }
    }

    /// Every counter and where it is exported, in index order. Within a family,
    /// `/metrics` prints the counters in this order.
    pub const TABLE: [Export; COUNT as usize] = [
        export(REDIRECTED_SEGMENTS, family::VERDICTS, "redirected"),
        export(
            BYTES_CLIENT_TO_BACKEND,
            family::SPLICED_BYTES,
            "client_to_backend",
        ),
        export(
            BYTES_BACKEND_TO_CLIENT,
            family::SPLICED_BYTES,
            "backend_to_client",
        ),
        export(PASSED_NO_FLOW, family::VERDICTS, "passed_no_flow"),
        export(
            PASSED_REDIRECT_FAILED,
            family::VERDICTS,
            "passed_redirect_failed",
        ),
        single(PASSED_BYTES, family::PASSED_BYTES),
        export(DROPPED_EMPTY_SEGMENTS, family::VERDICTS, "dropped_empty"),
        export(PASSED_PAUSED, family::VERDICTS, "passed_paused"),
        single(PAUSES, family::PAUSES),
        single(RESUMES, family::RESUMES),
        single(EVENTS_LOST, family::EVENTS_LOST),
        export(OVERLAP_SEGMENTS, family::VERDICTS, "overlap_trimmed"),
        single(OVERLAP_BYTES, family::OVERLAP_BYTES),
        single(SEQ_ANOMALIES, family::SEQ_ANOMALIES),
    ];

    // The table has one entry per counter, at its own index (`TABLE[i].index == i` for
    // every `i` below `COUNT`); each entry names a family that exists, with a label value
    // exactly when the family has a label; and every family exports something, one counter
    // only when it has no label to tell several apart.
    const _: () = {
        assert!(TABLE.len() == COUNT as usize);
        let mut exported = [0usize; FAMILIES.len()];
        let mut i = 0;
        while i < TABLE.len() {
            let entry = TABLE[i];
            assert!(entry.index as usize == i, "TABLE is not in index order");
            assert!(
                entry.family < FAMILIES.len(),
                "a TABLE entry names no family"
            );
            assert!(
                entry.label.is_some() == FAMILIES[entry.family].label.is_some(),
                "a label value without its family's label, or the other way round"
            );
            exported[entry.family] += 1;
            i += 1;
        }
        let mut f = 0;
        while f < FAMILIES.len() {
            assert!(exported[f] > 0, "a family no counter is exported as");
            assert!(
                FAMILIES[f].label.is_some() || exported[f] == 1,
                "several counters in a family without a label"
            );
            f += 1;
        }
    };
}

/// Where the kernel keeps a TCP segment's sequence numbers: `TCP_SKB_CB(skb)->seq` and
/// `->end_seq`, the first 8 bytes of `struct sk_buff`'s `cb` (at byte 40 of `sk_buff` on
/// 64-bit kernels since 4.x). The verdict checks every segment against them
/// (`end_seq - seq` must be its length, plus one for a FIN), so a kernel where the offset
/// differs shows up as [`counter::SEQ_ANOMALIES`] in the start-up self-test, not as a
/// corrupt stream.
pub const SKB_CB_OFFSET: usize = 40;

/// Bits of [`FlowStats::seq_state`].
pub mod seq_state {
    /// `FlowStats::next_seq` holds the sequence number after the last byte seen.
    pub const KNOWN: u32 = 1;
    /// A segment's sequence numbers made no sense, or repeated bytes could not be cut off:
    /// the stream can no longer be vouched for.
    pub const ANOMALY: u32 = 2;
}

/// Per-direction state of one spliced tunnel, written only by the verdict program and
/// keyed by the source socket's cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Bytes redirected from the source socket to its peer.
    pub bytes: u64,
    /// Segments (skbs) redirected.
    pub segments: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of the last segment seen;
    /// 0 until the first one.
    pub last_activity_ns: u64,
    /// Bytes passed to the source's own queue instead of redirected (while paused, or when
    /// a redirect failed); userspace forwards them and reports it in
    /// [`FlowControl::released`].
    pub passed_bytes: u64,
    /// The [`FlowControl::notify_at`] value last notified, so each mark is announced once.
    pub notified_at: u64,
    /// Bytes the kernel handed the verdict a second time (overlapping retransmissions),
    /// cut off before they went anywhere; see [`counter::OVERLAP_BYTES`].
    pub overlap_bytes: u64,
    /// TCP sequence number after the last byte seen (valid once `seq_state` has
    /// [`seq_state::KNOWN`]).
    pub next_seq: u32,
    /// Bits of [`seq_state`].
    pub seq_state: u32,
    /// One of [`direction`].
    pub direction: u32,
    /// 1 while the flow passes instead of redirecting; see [`FlowControl`].
    pub paused: u32,
    /// Times this flow paused. The daemon tells pauses apart by it: between two of its
    /// looks a flow may resume and pause again, and `paused` alone would not show it.
    pub pauses: u64,
}

impl FlowStats {
    /// A fresh entry for a flow in `direction`.
    pub const fn new(direction: u32) -> Self {
        Self {
            bytes: 0,
            segments: 0,
            last_activity_ns: 0,
            passed_bytes: 0,
            notified_at: 0,
            overlap_bytes: 0,
            next_seq: 0,
            seq_state: 0,
            direction,
            paused: 0,
            pauses: 0,
        }
    }
}

/// How far one direction of a spliced tunnel may run ahead of its destination, written
/// only by the daemon and keyed by the source socket's cookie.
///
/// The verdict redirects while `FlowStats::bytes` stays within `limit`; past it the flow
/// *pauses*: segments are passed to the source's own queue, where they count against its
/// receive buffer, so TCP flow control slows the sender. The daemon forwards those bytes
/// once everything redirected before them has reached the destination, counts them in
/// `released`, and raises `limit`. The verdict resumes redirecting only when
/// `released == FlowStats::passed_bytes`: every passed byte is then in the destination's
/// send queue, so order is kept.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowControl {
    /// Redirected bytes may reach this total; beyond it the flow pauses.
    pub limit: u64,
    /// When redirected bytes reach this total, the verdict sends one
    /// [`event::WATERMARK`] so the daemon can raise `limit` before the flow pauses.
    pub notify_at: u64,
    /// Passed bytes the daemon has forwarded to the destination.
    pub released: u64,
}

impl FlowControl {
    /// The control of a flow that has moved nothing yet, allowed `budget` bytes ahead.
    pub const fn new(budget: u64) -> Self {
        Self {
            limit: budget,
            notify_at: budget / 2,
            released: 0,
        }
    }
}

/// Kinds of [`FlowEvent`].
pub mod event {
    /// Redirected bytes reached [`crate::FlowControl::notify_at`].
    pub const WATERMARK: u32 = 1;
    /// The flow paused: its segments now wait in the source's queue for the daemon.
    pub const PAUSED: u32 = 2;
    /// The verdict met a segment it cannot vouch for (see [`crate::seq_state::ANOMALY`]):
    /// the daemon checks the tunnel at once and resets it.
    pub const ANOMALY: u32 = 3;
}

/// A request for the daemon's attention, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// Cookie of the source socket of the flow.
    pub cookie: u64,
    /// One of [`event`].
    pub kind: u32,
    /// Reserved, always 0; keeps the struct free of implicit padding.
    pub reserved: u32,
}

// The layouts both sides read, checked where they are defined: the eBPF program and the
// daemon are built from this one crate, but a field added without its padding twin would
// otherwise only show as garbled counters at run time.
const _: () = assert!(core::mem::size_of::<FlowStats>() == 72);
const _: () = assert!(core::mem::align_of::<FlowStats>() == 8);
const _: () = assert!(core::mem::size_of::<FlowControl>() == 24);
const _: () = assert!(core::mem::align_of::<FlowControl>() == 8);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 16);
const _: () = assert!(core::mem::align_of::<FlowEvent>() == 8);

// SAFETY: `repr(C)`, `Copy`, made only of integers, and without padding (7 × u64 + 4 × u32
// = 72 bytes, 8-byte aligned; asserted above), so every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowStats {}
// SAFETY: `repr(C)`, `Copy`, 3 × u64 = 24 bytes without padding (asserted above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowControl {}
// SAFETY: `repr(C)`, `Copy`, u64 + 2 × u32 = 16 bytes without padding (asserted above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowEvent {}

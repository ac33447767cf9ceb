//! The kernel half of the splice: an `sk_skb/stream_verdict` program attached to the
//! `SPLICED` sockhash. For every segment that arrives on a spliced socket it looks up the
//! socket's peer in `PEERS` (keyed by the arriving socket's cookie) and redirects the
//! segment to the peer's send path. It never drops a byte: a segment it cannot redirect is
//! passed to the socket's own receive queue, where userspace can still read it. (Only empty
//! segments, FIN markers, are dropped; see `splice_verdict`.)
//!
//! Every decision is counted in `COUNTERS`, and per-direction bytes and last activity are
//! kept in `FLOWS`, so tests and `/metrics` can see what the program did.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_coarse_ns},
    macros::{map, stream_verdict},
    maps::{HashMap, PerCpuArray, RingBuf, SockHash},
    programs::SkBuffContext,
};
use gateway_common::{
    counter, direction, event, FlowControl, FlowEvent, FlowStats, MAX_SPLICED_SOCKETS,
};

#[map(name = "PEERS")]
static PEERS: SockHash<u64> = SockHash::with_max_entries(MAX_SPLICED_SOCKETS, 0);

#[map(name = "SPLICED")]
static SPLICED: SockHash<u64> = SockHash::with_max_entries(MAX_SPLICED_SOCKETS, 0);

#[map(name = "FLOWS")]
static FLOWS: HashMap<u64, FlowStats> = HashMap::with_max_entries(MAX_SPLICED_SOCKETS, 0);

#[map(name = "CONTROL")]
static CONTROL: HashMap<u64, FlowControl> = HashMap::with_max_entries(MAX_SPLICED_SOCKETS, 0);

/// 256 KiB: 16 384 events of 16 bytes. Events come at most one per budget/2 bytes per flow
/// plus one per pause; a lost one is counted and the daemon sweeps all flows.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[stream_verdict]
pub fn splice_verdict(ctx: SkBuffContext) -> u32 {
    let len = u64::from(ctx.len());
    if len == 0 {
        // A FIN without payload reaches the verdict as an empty skb. Redirected, it makes
        // `sk_psock_backlog` see a 0-byte send, report EPIPE on the destination and stop
        // its transmit for good. It carries no bytes and TCP has already taken note of
        // the FIN, so dropping it loses nothing; userspace forwards the FIN.
        bump(counter::DROPPED_EMPTY_SEGMENTS, 1);
        return SK_DROP;
    }
    // Whatever happens next, the segment is either redirected or kept for userspace.
    verdict(&ctx, len);
    SK_PASS
}

#[inline(always)]
fn verdict(ctx: &SkBuffContext, len: u64) {
    // SAFETY: the helper only reads the socket the skb belongs to; `skb` is the context
    // pointer the kernel handed us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let Some(flow) = FLOWS.get_ptr_mut(cookie) else {
        bump(counter::PASSED_NO_FLOW, 1);
        bump(counter::PASSED_BYTES, len);
        return;
    };
    // SAFETY: `flow` points into a live map value that the kernel keeps valid while the
    // program runs. The entry is keyed by the *source* socket and the verdict for one socket
    // runs under that socket's lock (softirq `data_ready` or `recvmsg`), so this program is
    // the only writer of it at any time; userspace only reads it (aligned u64 loads).
    let flow = unsafe { &mut *flow };
    flow.last_activity_ns = unsafe { bpf_ktime_get_coarse_ns() };
    // The daemon's side of the bargain; without it the flow is not flow-controlled.
    let control = match CONTROL.get_ptr(cookie) {
        // SAFETY: as above; the daemon rewrites the value whole with one map update.
        Some(control) => unsafe { *control },
        None => FlowControl {
            limit: u64::MAX,
            notify_at: u64::MAX,
            released: 0,
        },
    };

    if flow.paused != 0 {
        // Resume only once every passed byte is in the destination (order), and the
        // destination has room again (budget).
        if flow.passed_bytes == control.released && flow.bytes + len <= control.limit {
            flow.paused = 0;
            bump(counter::RESUMES, 1);
        } else {
            pass(flow, len, counter::PASSED_PAUSED);
            return;
        }
    } else if flow.bytes + len > control.limit {
        flow.paused = 1;
        bump(counter::PAUSES, 1);
        notify(cookie, event::PAUSED);
        pass(flow, len, counter::PASSED_PAUSED);
        return;
    }

    // `bpf_sk_redirect_hash` returns SK_PASS and marks the skb for redirection when the
    // peer is in the map (egress: flags 0), and SK_DROP without marking it otherwise. We
    // return SK_PASS either way, so an unmarked skb lands in this socket's own queue; the
    // flow then pauses so later segments queue behind it until the daemon forwarded it.
    if PEERS.redirect_skb(ctx, cookie, 0) != i64::from(SK_PASS) {
        flow.paused = 1;
        notify(cookie, event::PAUSED);
        pass(flow, len, counter::PASSED_REDIRECT_FAILED);
        return;
    }
    flow.bytes += len;
    flow.segments += 1;
    bump(counter::REDIRECTED_SEGMENTS, 1);
    if flow.direction == direction::CLIENT_TO_BACKEND {
        bump(counter::BYTES_CLIENT_TO_BACKEND, len);
    } else {
        bump(counter::BYTES_BACKEND_TO_CLIENT, len);
    }
    if flow.bytes >= control.notify_at && flow.notified_at != control.notify_at {
        flow.notified_at = control.notify_at;
        notify(cookie, event::WATERMARK);
    }
}

/// Leaves the segment in the source's own queue (the caller returns SK_PASS unmarked).
#[inline(always)]
fn pass(flow: &mut FlowStats, len: u64, reason: u32) {
    flow.passed_bytes += len;
    bump(reason, 1);
    bump(counter::PASSED_BYTES, len);
}

#[inline(always)]
fn notify(cookie: u64, kind: u32) {
    let event = FlowEvent {
        cookie,
        kind,
        reserved: 0,
    };
    if EVENTS.output::<FlowEvent>(&event, 0).is_err() {
        bump(counter::EVENTS_LOST, 1);
    }
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of a live array map; BPF programs are not migrated between
        // CPUs while they run, so this CPU is the only writer.
        unsafe { *slot += by };
    }
}

// Only on the BPF target: on the host (where `cargo clippy --workspace` checks this crate)
// aya-ebpf brings std, and with it a panic handler.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

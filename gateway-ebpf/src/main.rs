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
    maps::{HashMap, PerCpuArray, SockHash},
    programs::SkBuffContext,
};
use gateway_common::{counter, direction, FlowStats, MAX_SPLICED_SOCKETS};

#[map(name = "PEERS")]
static PEERS: SockHash<u64> = SockHash::with_max_entries(MAX_SPLICED_SOCKETS, 0);

#[map(name = "SPLICED")]
static SPLICED: SockHash<u64> = SockHash::with_max_entries(MAX_SPLICED_SOCKETS, 0);

#[map(name = "FLOWS")]
static FLOWS: HashMap<u64, FlowStats> = HashMap::with_max_entries(MAX_SPLICED_SOCKETS, 0);

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
    // `bpf_sk_redirect_hash` returns SK_PASS and marks the skb for redirection when the
    // peer is in the map (egress: flags 0), and SK_DROP without marking it otherwise. We
    // return SK_PASS either way, so an unmarked skb lands in this socket's own queue.
    if PEERS.redirect_skb(ctx, cookie, 0) != i64::from(SK_PASS) {
        bump(counter::PASSED_REDIRECT_FAILED, 1);
        bump(counter::PASSED_BYTES, len);
        return;
    }
    // SAFETY: `flow` points into a live map value that the kernel keeps valid while the
    // program runs. The entry is keyed by the *source* socket and the verdict for one socket
    // runs under that socket's lock (softirq `data_ready` or `recvmsg`), so this program is
    // the only writer of it at any time; userspace only reads (aligned u64 loads).
    unsafe {
        (*flow).bytes += len;
        (*flow).segments += 1;
        (*flow).last_activity_ns = bpf_ktime_get_coarse_ns();
    }
    bump(counter::REDIRECTED_SEGMENTS, 1);
    // SAFETY: as above.
    let dir = unsafe { (*flow).direction };
    if dir == direction::CLIENT_TO_BACKEND {
        bump(counter::BYTES_CLIENT_TO_BACKEND, len);
    } else {
        bump(counter::BYTES_BACKEND_TO_CLIENT, len);
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

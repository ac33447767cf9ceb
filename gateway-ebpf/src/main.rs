//! The kernel half of the splice: an `sk_skb/stream_verdict` program attached to the
//! `SPLICED` sockhash. For every segment that arrives on a spliced socket it looks up the
//! socket's peer in `PEERS` (keyed by the arriving socket's cookie) and redirects the
//! segment to the peer's send path. It never drops a byte of the stream: a segment it cannot
//! redirect is passed to the socket's own receive queue, where userspace can still read
//! it. What it drops carries none: empty segments (FIN markers), and retransmitted bytes
//! the flow has already seen (see `repeated_bytes`).
//!
//! Every decision is counted in `COUNTERS`, and per-direction bytes and last activity are
//! kept in `FLOWS`, so tests and `/metrics` can see what the program did.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_coarse_ns, bpf_probe_read_kernel},
    macros::{map, stream_verdict},
    maps::{HashMap, PerCpuArray, RingBuf, SockHash},
    programs::SkBuffContext,
};
use gateway_common::{
    counter, direction, event, seq_state, FlowControl, FlowEvent, FlowStats, MAX_SPLICED_SOCKETS,
    SKB_CB_OFFSET,
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
    // SAFETY: the helper only reads the socket the skb belongs to; `skb` is the context
    // pointer the kernel handed us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let Some(flow) = FLOWS.get_ptr_mut(cookie) else {
        bump(counter::PASSED_NO_FLOW, 1);
        bump(counter::PASSED_BYTES, len);
        return SK_PASS;
    };
    // SAFETY: `flow` points into a live map value that the kernel keeps valid while the
    // program runs. The entry is keyed by the *source* socket and the verdict for one socket
    // runs under that socket's lock (softirq `data_ready` or `recvmsg`), so this program is
    // the only writer of it at any time; userspace only reads it (a syscall copy, which may
    // see a write half done: the daemon's integrity checks confirm a finding on a second
    // reading before acting on it).
    let flow = unsafe { &mut *flow };
    // SAFETY: a helper without arguments that only reads the clock.
    flow.last_activity_ns = unsafe { bpf_ktime_get_coarse_ns() };
    let repeated = repeated_bytes(&ctx, cookie, flow, len);
    let fresh = len - repeated;
    if fresh > 0 {
        // Whatever happens next, the segment is either redirected or kept for userspace.
        verdict(&ctx, cookie, flow, fresh);
    }
    // The repeated head is cut off last, once nothing else needs deciding: the verifier
    // then walks each exit of the trimming loop through a few instructions only.
    if repeated > 0 && !trim_head(&ctx, repeated) {
        // Part of the head may be gone already: what is left is not the stream, and the
        // old bytes must not go out again. Dropped, the fresh ones are lost instead, so
        // the tunnel is reset (the daemon is woken for it).
        anomaly(cookie, flow);
        return SK_DROP;
    }
    if fresh == 0 {
        // Every byte was seen before and the segment is now empty: dropping an empty skb
        // loses nothing (and moves no TCP counter).
        return SK_DROP;
    }
    SK_PASS
}

/// Most bytes one `bpf_skb_adjust_room` call may remove (`sk_skb_adjust_room` refuses more).
const TRIM_STEP_BYTES: u64 = 4095;
/// Most full trimming steps for one segment: 64 × 4095 bytes, about 256 KiB of repeated
/// bytes (two loopback MSS were seen); more marks the flow as an anomaly.
const MAX_TRIM_STEPS: u32 = 64;

/// How many bytes at the head of this segment the flow has already seen.
///
/// `tcp_read_skb` hands the verdict each queued skb whole, without looking at sequence
/// numbers, and TCP queues a retransmission that partly overlaps bytes already received
/// untrimmed (`tcp_data_queue`'s "partial packet": readers normally skip the old head by
/// `copied_seq`). Redirected whole, its head would reach the destination twice. Seen here
/// as 130 966 extra bytes (two loopback MSS) in the middle of a 1 GiB stream.
#[inline(always)]
fn repeated_bytes(ctx: &SkBuffContext, cookie: u64, flow: &mut FlowStats, len: u64) -> u64 {
    // SAFETY: the context pointer of an sk_skb program is the kernel's `struct sk_buff`;
    // the helper reads 8 bytes of its control block and fails cleanly if it cannot.
    let seqs = unsafe {
        bpf_probe_read_kernel(
            ctx.skb
                .skb
                .cast::<u8>()
                .add(SKB_CB_OFFSET)
                .cast::<[u32; 2]>(),
        )
    };
    let Ok([seq, end_seq]) = seqs else {
        anomaly(cookie, flow);
        return 0;
    };
    // `end_seq` counts a FIN as one more.
    let data_end = seq.wrapping_add(len as u32);
    if end_seq != data_end && end_seq != data_end.wrapping_add(1) {
        anomaly(cookie, flow);
        return 0;
    }
    if flow.seq_state & seq_state::KNOWN == 0 {
        flow.next_seq = data_end;
        flow.seq_state |= seq_state::KNOWN;
        return 0;
    }
    let behind = flow.next_seq.wrapping_sub(seq) as i32;
    if behind <= 0 {
        if behind < 0 {
            // Bytes missing between the last segment and this one: TCP never does that.
            anomaly(cookie, flow);
        }
        flow.next_seq = data_end;
        return 0;
    }
    let repeated = (behind as u64).min(len);
    flow.overlap_bytes += repeated;
    bump(counter::OVERLAP_SEGMENTS, 1);
    bump(counter::OVERLAP_BYTES, repeated);
    if (data_end.wrapping_sub(flow.next_seq) as i32) > 0 {
        flow.next_seq = data_end;
    }
    repeated
}

/// Removes the first `bytes` of the segment, in the steps `bpf_skb_adjust_room` allows;
/// `false` if a step failed or `bytes` was beyond what [`MAX_TRIM_STEPS`] can remove.
///
/// Written for the verifier: the loop runs a constant number of times, and the step count
/// is read back volatile on each turn so that LLVM cannot fold it into the trip count (an
/// induction variable derived from an unknown value keeps the verifier from ever seeing
/// the loop end).
#[inline(always)]
fn trim_head(ctx: &SkBuffContext, bytes: u64) -> bool {
    let full_steps = bytes / TRIM_STEP_BYTES;
    if full_steps > u64::from(MAX_TRIM_STEPS) {
        return false;
    }
    let mut ok = true;
    for step in 0..MAX_TRIM_STEPS {
        // SAFETY: a read of a local.
        let wanted = unsafe { core::ptr::read_volatile(&full_steps) };
        if ok && u64::from(step) < wanted {
            ok = ctx.adjust_room(-(TRIM_STEP_BYTES as i32), 0, 0).is_ok();
        }
    }
    let rest = (bytes % TRIM_STEP_BYTES) as i32;
    ok && (rest == 0 || ctx.adjust_room(-rest, 0, 0).is_ok())
}

/// Marks the flow as no longer trustworthy and wakes the daemon, which resets its tunnel.
#[inline(always)]
fn anomaly(cookie: u64, flow: &mut FlowStats) {
    flow.seq_state |= seq_state::ANOMALY;
    bump(counter::SEQ_ANOMALIES, 1);
    notify(cookie, event::ANOMALY);
}

#[inline(always)]
fn verdict(ctx: &SkBuffContext, cookie: u64, flow: &mut FlowStats, len: u64) {
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

    // The limit is checked before the segment, not after it: a budget smaller than one
    // segment (64 KiB on loopback) must still let segments through one at a time. The
    // backlog can so exceed the budget by at most one segment.
    if flow.paused != 0 {
        // Resume only once every passed byte is in the destination (order), and the
        // destination has room again (budget).
        if flow.passed_bytes == control.released && flow.bytes < control.limit {
            flow.paused = 0;
            bump(counter::RESUMES, 1);
        } else {
            pass(flow, len, counter::PASSED_PAUSED);
            return;
        }
    } else if flow.bytes >= control.limit {
        pause(cookie, flow);
        pass(flow, len, counter::PASSED_PAUSED);
        return;
    }

    // `bpf_sk_redirect_hash` returns SK_PASS and marks the skb for redirection when the
    // peer is in the map (egress: flags 0), and SK_DROP without marking it otherwise. We
    // return SK_PASS either way, so an unmarked skb lands in this socket's own queue; the
    // flow then pauses so later segments queue behind it until the daemon forwarded it.
    // The flow is not paused here (a paused one returned above, or has just resumed), so
    // this too is a pause, counted as one.
    if PEERS.redirect_skb(ctx, cookie, 0) != i64::from(SK_PASS) {
        pause(cookie, flow);
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

/// The flow goes from redirecting to paused: the one place a pause is made, so the flow's
/// `pauses` and the `PAUSES` counter always agree.
#[inline(always)]
fn pause(cookie: u64, flow: &mut FlowStats) {
    flow.paused = 1;
    flow.pauses += 1;
    bump(counter::PAUSES, 1);
    notify(cookie, event::PAUSED);
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

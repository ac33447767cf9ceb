//! What userspace knows of one direction of a spliced tunnel.

use std::time::Instant;

use gateway_common::FlowControl;

use super::budget::FlowBudget;
use crate::dataplane::sockopt::TcpCounters;

/// One direction of the tunnel: bytes arriving on `from` leave through `to`.
pub(super) struct Half {
    /// Cookie of `from`: the key of this flow in `FLOWS` and `CONTROL`.
    pub(super) cookie: u64,
    /// Bytes userspace had consumed from `from` before the splice began.
    pub(super) consumed_before: u64,
    /// Bytes written into `to` before the splice began.
    pub(super) written_before: u64,
    /// Bytes userspace wrote into `to` since (passed bytes it forwarded).
    pub(super) forwarded: u64,
    /// What this flow's `CONTROL` entry should hold (only we write it); `limit` may be
    /// raised here before it is published.
    pub(super) control: FlowControl,
    /// What this flow's `CONTROL` entry holds now.
    pub(super) published: FlowControl,
    /// How far the flow may run ahead of `to`.
    pub(super) budget: FlowBudget,
    /// Scratch space for peeking passed bytes; freed once the flow is caught up.
    pub(super) buf: Vec<u8>,
    /// Passed bytes at the head of `from`'s queue already written to `to` but not yet
    /// taken off `from` (see `Supervisor::forward`).
    pub(super) held: usize,
    /// The flow may need us: paused, passed bytes to forward, or a watermark crossed.
    pub(super) attention: bool,
    /// Passed bytes wait in `from`'s queue to be forwarded.
    pub(super) outstanding: bool,
    /// Bytes redirected but not yet in `to`'s send queue, at the last step.
    pub(super) backlog: u64,
    /// `control.released` when last seen to change, and when: how long owed bytes have
    /// not moved.
    pub(super) released_seen: u64,
    pub(super) released_at: Instant,
    /// Held paused for the other flow: its passed bytes may wait in `to`'s psock queue
    /// behind this flow's redirected ones, where nothing stops its sender (see
    /// `Supervisor::run`).
    pub(super) yielding: bool,
    /// Some passed bytes owed could not be read at the last peek: they wait in `from`'s
    /// psock queue behind bytes the other flow redirected to `from`.
    pub(super) stuck: bool,
    /// The brake on `from`'s sender (see `Supervisor::brake`).
    pub(super) brake: Brake,
    /// `from` has sent FIN.
    pub(super) eof: bool,
    /// `to` has been shut down for writing (FIN forwarded).
    pub(super) shut: bool,
}

impl Half {
    pub(super) fn new(
        cookie: u64,
        from: &TcpCounters,
        to: &TcpCounters,
        budget: FlowBudget,
    ) -> Self {
        Self {
            cookie,
            consumed_before: from.bytes_consumed(),
            written_before: to.bytes_written(),
            forwarded: 0,
            control: FlowControl::new(budget.bytes()),
            published: FlowControl::new(budget.bytes()),
            budget,
            buf: Vec::new(),
            held: 0,
            attention: true,
            outstanding: false,
            backlog: 0,
            released_seen: 0,
            released_at: Instant::now(),
            yielding: false,
            stuck: false,
            brake: Brake::default(),
            eof: false,
            shut: false,
        }
    }

    /// Redirected bytes that have left the kernel's redirect queue for `to`'s send queue.
    pub(super) fn delivered(&self, to: &TcpCounters) -> u64 {
        to.bytes_written()
            .saturating_sub(self.written_before + self.forwarded)
    }

    /// Whether every byte `from` received before its FIN is now in `to`'s send queue.
    /// After the FIN, `bytes_received` counts one extra for it.
    pub(super) fn drained(&self, from: &TcpCounters, to: &TcpCounters) -> bool {
        let expected = from.bytes_received.saturating_sub(1 + self.consumed_before);
        to.bytes_written().saturating_sub(self.written_before) >= expected
    }
}

/// The brake on one flow's sender (see `Supervisor::brake`).
#[derive(Debug, Default)]
pub(super) struct Brake {
    /// What the flow may owe before its sender is braked (again); 0 outside an episode.
    pub(super) line: u64,
    /// Since when the window is shut, and `control.released` then, if it is.
    pub(super) on: Option<(Instant, u64)>,
}

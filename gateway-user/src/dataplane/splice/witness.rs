//! The integrity witness of a spliced tunnel: the gateway does not take the kernel's word
//! for it. For each direction it checks that the kernel moved no byte the source socket did
//! not receive, delivered no byte it did not move, and found every segment in sequence;
//! at the end of a clean close the counts must be equal. A finding means the stream can no
//! longer be vouched for, and the tunnel is reset (see docs/dataplane.md, "The integrity
//! witness").

use std::{fmt, io, net::TcpStream};

use gateway_common::seq_state;

use crate::{
    dataplane::{sockopt, EbpfDataplane, TunnelKeys},
    metrics::Direction,
};

/// What userspace knows of one direction that the kernel's counters do not say.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ledger {
    /// Bytes userspace had consumed from the source before the splice began.
    pub consumed_before: u64,
    /// Bytes written into the destination before the splice began.
    pub written_before: u64,
    /// Bytes userspace wrote into the destination since (passed bytes it forwarded).
    pub forwarded: u64,
    /// The destination has been shut down for writing (its FIN counts one more).
    pub shut: bool,
}

/// What did not add up, and in which direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The verdict met a segment it cannot vouch for (a gap, an unreadable or inconsistent
    /// sequence number, a repeated head it could not cut off).
    OutOfSequence { direction: Direction, after: u64 },
    /// The kernel moved more bytes than the source received since the splice.
    MovedMoreThanReceived {
        direction: Direction,
        redirected: u64,
        passed: u64,
        received: u64,
    },
    /// The destination was given more bytes than were redirected and forwarded.
    GivenMoreThanSent {
        direction: Direction,
        given: u64,
        redirected: u64,
        forwarded: u64,
    },
    /// After both FINs, the counts differ.
    UnequalAtEnd {
        direction: Direction,
        received: u64,
        moved: u64,
        sent: u64,
        given: u64,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfSequence { direction, after } => write!(
                f,
                "{direction}: the verdict met a segment out of sequence (after {after} bytes)"
            ),
            Self::MovedMoreThanReceived {
                direction,
                redirected,
                passed,
                received,
            } => write!(
                f,
                "{direction}: the kernel moved {} bytes ({redirected} redirected, {passed} \
                 passed) but the source received {received} since the splice",
                redirected + passed
            ),
            Self::GivenMoreThanSent {
                direction,
                given,
                redirected,
                forwarded,
            } => write!(
                f,
                "{direction}: the destination was given {given} bytes but only {} were moved \
                 ({redirected} redirected, {forwarded} forwarded by the gateway)",
                redirected + forwarded
            ),
            Self::UnequalAtEnd {
                direction,
                received,
                moved,
                sent,
                given,
            } => write!(
                f,
                "{direction}: at the end the source received {received} bytes, the kernel \
                 moved {moved}, {sent} were sent on and the destination was given {given}"
            ),
        }
    }
}

/// A failed reading, and which socket (0: client, 1: backend) it was about.
pub(super) type ReadError = (usize, io::Error);

/// Runs [`check`], acting only on a finding that a second reading confirms: `FLOWS` is
/// copied out by a syscall while the verdict may be writing it, so one reading can see a
/// counter half updated. (A sequence anomaly is sticky and always confirms.)
pub(super) fn confirmed(
    ebpf: &EbpfDataplane,
    keys: TunnelKeys,
    socks: [&TcpStream; 2],
    ledgers: [Ledger; 2],
    at_end: bool,
) -> Result<Option<Finding>, ReadError> {
    if check(ebpf, keys, socks, ledgers, at_end)?.is_none() {
        return Ok(None);
    }
    check(ebpf, keys, socks, ledgers, at_end)
}

/// One reading. Bytes moved (redirected plus passed, counted by the verdict) can never
/// exceed bytes received since the splice (`tcpi_bytes_received`, which counts each
/// sequence number once); bytes in the destination's send queue since the splice can never
/// exceed bytes redirected plus bytes userspace forwarded. The readings are ordered so that
/// neither check can fire on a byte in transit: destinations first (a byte the redirect
/// worker pushed was counted by the verdict before), then `FLOWS`, then sources (a byte the
/// verdict counted was received before). With `at_end` (both FINs forwarded, every byte
/// delivered) the counts must be equal.
pub(super) fn check(
    ebpf: &EbpfDataplane,
    keys: TunnelKeys,
    socks: [&TcpStream; 2],
    ledgers: [Ledger; 2],
    at_end: bool,
) -> Result<Option<Finding>, ReadError> {
    let read = |side: usize| sockopt::tcp_counters(socks[side]).map_err(|e| (side, e));
    let destinations = [read(1)?, read(0)?];
    let (up, down) = ebpf.flow_stats(keys);
    let sources = [read(0)?, read(1)?];
    for (from, ledger) in ledgers.iter().enumerate() {
        let direction = [Direction::ClientToBackend, Direction::BackendToClient][from];
        let flow = if from == 0 { &up } else { &down };
        if flow.seq_state & seq_state::ANOMALY != 0 {
            return Ok(Some(Finding::OutOfSequence {
                direction,
                after: flow.bytes + flow.passed_bytes,
            }));
        }
        // Both counts below include one for a FIN once it arrived or was acknowledged.
        let received = sources[from]
            .bytes_received
            .saturating_sub(ledger.consumed_before);
        let moved = flow.bytes + flow.passed_bytes;
        if moved > received {
            return Ok(Some(Finding::MovedMoreThanReceived {
                direction,
                redirected: flow.bytes,
                passed: flow.passed_bytes,
                received,
            }));
        }
        let given = destinations[from]
            .bytes_written()
            .saturating_sub(ledger.written_before);
        let sent = flow.bytes + ledger.forwarded;
        if given > sent + u64::from(ledger.shut) {
            return Ok(Some(Finding::GivenMoreThanSent {
                direction,
                given,
                redirected: flow.bytes,
                forwarded: ledger.forwarded,
            }));
        }
        if at_end {
            let received = received.saturating_sub(1);
            if moved != received || sent != received || !(sent..=sent + 1).contains(&given) {
                return Ok(Some(Finding::UnequalAtEnd {
                    direction,
                    received,
                    moved,
                    sent,
                    given,
                }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// A connected pair: (the peer's end, the end the gateway would own).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let far = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (near, _) = listener.accept().expect("accept");
        (far, near)
    }

    /// The witness on a real splice: silent while the counts add up, and each finding when
    /// the ledger misstates what happened before the splice by a few bytes.
    #[test]
    fn the_witness_finds_what_does_not_add_up() {
        if std::env::var("GATEWAY_TEST_UNPRIVILEGED").is_ok_and(|v| v == "1") {
            eprintln!(
                "SKIPPED (GATEWAY_TEST_UNPRIVILEGED=1): the witness needs the eBPF dataplane"
            );
            return;
        }
        let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut client_far, client) = pair(&listener);
        let (mut backend_far, mut backend) = pair(&listener);
        // Bytes written before the splice (the handshake's), so the baselines are not 0.
        let mut early = [0u8; 100];
        backend.write_all(&early).expect("early bytes");
        backend_far
            .read_exact(&mut early)
            .expect("early bytes arrive");
        let c = sockopt::tcp_counters_settled(&client).expect("client counters");
        let b = sockopt::tcp_counters_settled(&backend).expect("backend counters");
        let honest = [
            Ledger {
                consumed_before: c.bytes_consumed(),
                written_before: b.bytes_written(),
                forwarded: 0,
                shut: false,
            },
            Ledger {
                consumed_before: b.bytes_consumed(),
                written_before: c.bytes_written(),
                forwarded: 0,
                shut: false,
            },
        ];
        let keys = ebpf.splice(&client, &backend, u64::MAX).expect("splice");
        let sent = vec![9u8; 100_000];
        client_far.write_all(&sent).expect("client writes");
        let mut got = vec![0u8; sent.len()];
        backend_far
            .read_exact(&mut got)
            .expect("the backend gets the bytes");
        let socks = [&client, &backend];
        let check = |ledgers, at_end| check(&ebpf, keys, socks, ledgers, at_end).expect("readings");

        assert_eq!(check(honest, false), None, "honest counts");
        let mut consumed_more = honest;
        consumed_more[0].consumed_before += 10;
        assert!(
            matches!(
                check(consumed_more, false),
                Some(Finding::MovedMoreThanReceived { received, .. }) if received == 99_990
            ),
            "moved more than received"
        );
        let mut written_less = honest;
        written_less[0].written_before -= 10;
        let finding = check(written_less, false);
        assert!(
            matches!(
                finding,
                Some(Finding::GivenMoreThanSent { given, .. }) if given == 100_010
            ),
            "given more than sent: {finding:?}"
        );
        // No FIN has come: at the end, one byte (the FIN) would be missing.
        assert!(
            matches!(check(honest, true), Some(Finding::UnequalAtEnd { .. })),
            "unequal at the end"
        );
        ebpf.unsplice(keys);
    }
}

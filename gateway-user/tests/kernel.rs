//! What the kernel does with spliced sockets, checked on the running kernel with the real
//! eBPF program. docs/dataplane.md cites these tests; if one fails on a new kernel, the
//! document (and maybe the handoff) needs revisiting.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN). With `GATEWAY_TEST_UNPRIVILEGED=1` each test
//! reports itself skipped instead.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

mod common;

use gateway::dataplane::{sockopt, EbpfDataplane};
use gateway_common::counter;
use sha2::{Digest, Sha256};

/// Flow-control budget for tests of the plain splice: never pauses.
const UNLIMITED: u64 = u64::MAX;

/// Whether to skip `name` (unprivileged); otherwise the test's thread gets a network
/// namespace of its own.
fn skip(name: &str) -> bool {
    if common::skip(name) {
        return true;
    }
    common::private_network();
    false
}

/// A connected pair: (`far`, the peer's end; `near`, the end the gateway would own).
fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let far = TcpStream::connect(listener.local_addr().expect("listener addr")).expect("connect");
    let (near, _) = listener.accept().expect("accept");
    (far, near)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_exactly(sock: &mut TcpStream, len: usize) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut buf = vec![0u8; len];
    sock.read_exact(&mut buf).expect("read the spliced bytes");
    buf
}

fn recv_nonblocking(sock: &TcpStream) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[test]
fn queued_before_splice_is_redirected_after_recv() {
    if skip("queued_before_splice_is_redirected_after_recv") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut client_far, client) = pair(&listener);
    let (mut backend_far, backend) = pair(&listener);

    // Bytes reach both sockets before they are spliced and sit in their receive queues.
    let up = payload(100_000, 1);
    let down = payload(50_000, 2);
    client_far.write_all(&up).expect("client writes");
    backend_far.write_all(&down).expect("backend writes");
    wait_until("both queues hold the bytes", || {
        sockopt::tcp_counters(&client).expect("counters").recv_queue == up.len() as u64
            && sockopt::tcp_counters(&backend)
                .expect("counters")
                .recv_queue
                == down.len() as u64
    });

    let keys = ebpf.splice(&client, &backend, UNLIMITED).expect("splice");
    // The insert alone does not run the verdict on queued data: nothing is redirected.
    // (SIOCINQ cannot show this: on a socket in a sockmap it reports only the psock's
    // ingress queue, see `tcp_bpf_ioctl`.)
    std::thread::sleep(Duration::from_millis(100));
    let (c2b, b2c) = ebpf.flow_stats(keys);
    let far_received = sockopt::tcp_counters(&backend_far)
        .expect("counters")
        .bytes_received;
    assert_eq!(
        (c2b.bytes, b2c.bytes, far_received),
        (0, 0, 0),
        "queued bytes were redirected by the insert itself; docs/dataplane.md is out of date"
    );

    // A receive runs the verdict on them; they are redirected, so it returns EAGAIN.
    for sock in [&client, &backend] {
        let err = recv_nonblocking(sock).expect_err("nothing is left for userspace");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }
    assert_eq!(
        Sha256::digest(read_exactly(&mut backend_far, up.len())),
        Sha256::digest(&up)
    );
    assert_eq!(
        Sha256::digest(read_exactly(&mut client_far, down.len())),
        Sha256::digest(&down)
    );

    let (c2b, b2c) = ebpf.unsplice(keys);
    assert_eq!((c2b.bytes, b2c.bytes), (up.len() as u64, down.len() as u64));
    assert_eq!(ebpf.counter(counter::PASSED_BYTES), 0);
}

#[test]
fn bare_fin_is_dropped_and_does_not_break_the_peer() {
    if skip("bare_fin_is_dropped_and_does_not_break_the_peer") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut client_far, client) = pair(&listener);
    let (mut backend_far, backend) = pair(&listener);
    let keys = ebpf.splice(&client, &backend, UNLIMITED).expect("splice");

    let up = payload(10_000, 3);
    client_far.write_all(&up).expect("client writes");
    assert_eq!(read_exactly(&mut backend_far, up.len()), up);
    client_far
        .shutdown(Shutdown::Write)
        .expect("client half-closes");
    wait_until("the client's FIN reached the spliced socket", || {
        sockopt::tcp_counters(&client)
            .expect("counters")
            .bytes_received
            == up.len() as u64 + 1
    });

    // The other direction still flows after the FIN...
    let down = payload(20_000, 4);
    backend_far
        .write_all(&down)
        .expect("backend writes after the client's FIN");
    assert_eq!(read_exactly(&mut client_far, down.len()), down);
    // ...and `backend` has no error: a redirected empty FIN skb makes the kernel's
    // redirect worker report EPIPE on it and stop transmitting to it.
    let err = sockopt::take_socket_error(&backend).expect("SO_ERROR");
    assert!(
        err.is_none(),
        "backend socket error after the client's FIN: {err:?}"
    );
    assert!(
        ebpf.counter(counter::DROPPED_EMPTY_SEGMENTS) >= 1,
        "the FIN skb was counted"
    );
    ebpf.unsplice(keys);
}

#[test]
fn unsplice_removes_every_entry() {
    if skip("unsplice_removes_every_entry") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (_client_far, client) = pair(&listener);
    let (_backend_far, backend) = pair(&listener);
    let keys = ebpf.splice(&client, &backend, UNLIMITED).expect("splice");
    assert_eq!(
        ebpf.entry_counts(),
        [2, 2, 2, 2],
        "PEERS, SPLICED, FLOWS, CONTROL while spliced"
    );
    ebpf.unsplice(keys);
    assert_eq!(
        ebpf.entry_counts(),
        [0, 0, 0, 0],
        "PEERS, SPLICED, FLOWS, CONTROL after unsplice"
    );
}

/// Splices `near` towards a fresh pair, has `far` send a marker after everything else, and
/// returns what the far end of the new pair receives before the marker. Order is kept, so
/// the marker arriving means everything sent before it has arrived too.
fn splice_and_collect(ebpf: &EbpfDataplane, near: &TcpStream, mut far: TcpStream) -> Vec<u8> {
    const MARKER: &[u8] = b"--- end of the test stream, nothing follows ---";
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut out_far, out_near) = pair(&listener);
    let keys = ebpf.splice(near, &out_near, UNLIMITED).expect("splice");
    let _ = recv_nonblocking(near);
    far.write_all(MARKER).expect("write the marker");

    out_far
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !got.ends_with(MARKER) {
        let n = out_far.read(&mut buf).expect("read until the marker");
        assert_ne!(n, 0, "EOF before the marker");
        got.extend_from_slice(&buf[..n]);
    }
    ebpf.unsplice(keys);
    got.truncate(got.len() - MARKER.len());
    got
}

#[test]
fn a_partly_read_skb_is_redirected_whole() {
    if skip("a_partly_read_skb_is_redirected_whole") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut far, mut near) = pair(&listener);
    // One write on loopback arrives as one skb (64 KiB MTU); read only its first 1000 bytes.
    let sent = payload(60_000, 5);
    far.write_all(&sent).expect("write");
    let mut head = [0u8; 1000];
    near.read_exact(&mut head).expect("read the head");

    let got = splice_and_collect(&ebpf, &near, far);
    // The kernel hands the verdict the whole skb, bytes already read included: they are
    // delivered a second time. This is why the handoff empties the queue first (next test).
    // If this starts failing, the kernel learned to honour the offset: good news, and
    // docs/dataplane.md needs updating.
    assert_eq!(
        got, sent,
        "the whole skb, including the 1000 bytes already read"
    );
}

#[test]
fn take_queued_leaves_no_partly_read_skb() {
    if skip("take_queued_leaves_no_partly_read_skb") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut far, mut near) = pair(&listener);
    let sent = payload(60_000, 6);
    far.write_all(&sent).expect("write");
    let mut head = [0u8; 1000];
    near.read_exact(&mut head).expect("read the head");
    let mut early = head.to_vec();
    let emptied = gateway::dataplane::sockio::take_queued(&near, &mut early, 1 << 20)
        .expect("take the queued bytes");
    assert!(emptied);
    // Bytes that arrive after the queue was emptied form fresh skbs: they are spliced once.
    let more = payload(30_000, 7);
    far.write_all(&more).expect("write more");

    let got = splice_and_collect(&ebpf, &near, far);
    assert_eq!(early, sent, "userspace holds exactly what was queued");
    assert_eq!(
        got, more,
        "the splice carries exactly the rest, nothing twice"
    );
}

#[test]
fn a_half_closed_socket_is_refused_and_nothing_is_left_behind() {
    if skip("a_half_closed_socket_is_refused_and_nothing_is_left_behind") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (_client_far, client) = pair(&listener);
    let (backend_far, backend) = pair(&listener);
    // The backend's FIN arrives before the splice: `backend` is in CLOSE_WAIT.
    backend_far
        .shutdown(Shutdown::Write)
        .expect("backend half-closes");
    wait_until("the FIN arrived", || {
        sockopt::tcp_counters(&backend)
            .expect("counters")
            .bytes_received
            == 1
    });

    let refused = ebpf
        .splice(&client, &backend, UNLIMITED)
        .expect_err("only ESTABLISHED sockets join");
    assert!(
        refused.can_relay(),
        "nothing was redirected, so the relay can take over"
    );
    assert_eq!(
        ebpf.entry_counts(),
        [0, 0, 0, 0],
        "PEERS, SPLICED, FLOWS, CONTROL after the refusal"
    );
}

/// A socket that is closed leaves every sockmap it is in (`sock_map_close`), so its peer's
/// segments find no redirect target: each is passed to the peer's own queue, never
/// dropped, and the flow pauses, counted once like a pause at the budget. (The gateway
/// unsplices before it closes; closing one end here is how a test takes a peer out of
/// `PEERS` behind the daemon's back.)
#[test]
fn a_failed_redirect_passes_the_segment_and_counts_one_pause() {
    if skip("a_failed_redirect_passes_the_segment_and_counts_one_pause") {
        return;
    }
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut client_far, mut client) = pair(&listener);
    let (_backend_far, backend) = pair(&listener);
    let keys = ebpf.splice(&client, &backend, UNLIMITED).expect("splice");
    drop(backend);
    wait_until("the closed socket left PEERS and SPLICED", || {
        ebpf.entry_counts() == [1, 1, 2, 2]
    });

    // One segment: the redirect fails, the segment is passed and the flow pauses.
    let first = payload(1_000, 8);
    client_far.write_all(&first).expect("client writes");
    wait_until("the segment was passed", || {
        ebpf.flow_stats(keys).0.passed_bytes == first.len() as u64
    });
    let (c2b, b2c) = ebpf.flow_stats(keys);
    assert_eq!((c2b.bytes, c2b.paused, c2b.pauses), (0, 1, 1));
    assert_eq!(ebpf.counter(counter::PASSED_REDIRECT_FAILED), 1);
    assert_eq!(
        ebpf.counter(counter::PAUSES),
        c2b.pauses + b2c.pauses,
        "the counter and the flows disagree on how many times a flow paused"
    );

    // The next segment finds the flow paused: passed behind the first, no new pause.
    let second = payload(2_000, 9);
    client_far.write_all(&second).expect("client writes again");
    wait_until("the second segment was passed", || {
        ebpf.flow_stats(keys).0.passed_bytes == (first.len() + second.len()) as u64
    });
    let (c2b, _) = ebpf.flow_stats(keys);
    assert_eq!(c2b.pauses, 1);
    assert_eq!(ebpf.counter(counter::PAUSES), 1);
    assert_eq!(ebpf.counter(counter::PASSED_REDIRECT_FAILED), 1);
    assert!(ebpf.counter(counter::PASSED_PAUSED) >= 1);

    // Nothing was dropped: userspace reads both, in order, from the client's own queue.
    let mut sent = first;
    sent.extend_from_slice(&second);
    assert_eq!(read_exactly(&mut client, sent.len()), sent);

    ebpf.unsplice(keys);
    assert_eq!(ebpf.entry_counts(), [0, 0, 0, 0]);
}

//! A retransmission that partly overlaps bytes already received, on a spliced socket.
//!
//! TCP queues such a segment untrimmed (`tcp_data_queue`'s "partial packet"; ordinary
//! readers skip its old head by `copied_seq`), and `tcp_read_skb` hands it to the verdict
//! whole. Redirected as it is, its old head reaches the destination a second time: the
//! duplicated bytes seen in the middle of long spliced streams. The verdict cuts the head
//! off by sequence number (`gateway-ebpf`, `repeated_bytes`).
//!
//! The retransmission is made by hand, so that it happens every run: the sender's socket
//! is frozen with `TCP_REPAIR` (which also tells its sequence numbers), and a raw socket
//! sends a segment that starts before the last byte the splice has already moved. It runs
//! in a network namespace of its own with TCP timestamps off, so the forged segment needs
//! no options.
//!
//! Needs root (CAP_NET_ADMIN for `TCP_REPAIR`, raw sockets and the namespace).

use std::{
    io::{Read, Write},
    mem,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

mod common;

use gateway::dataplane::{sockopt, EbpfDataplane};
use gateway_common::counter;

const TCP_REPAIR: libc::c_int = 19;
const TCP_REPAIR_QUEUE: libc::c_int = 20;
const TCP_QUEUE_SEQ: libc::c_int = 21;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;

/// One forged retransmission: bytes sent normally first, how far back the retransmission
/// starts, and how many new bytes it carries after that.
#[derive(Clone, Copy)]
struct Case {
    first: usize,
    repeated: usize,
    new: usize,
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn set_int(sock: &impl AsRawFd, option: libc::c_int, value: libc::c_int) {
    sockopt::set_int_option(sock, libc::IPPROTO_TCP, option, value)
        .unwrap_or_else(|e| panic!("setsockopt({option}, {value}): {e}"));
}

/// The next sequence number of one of the queues of a socket in repair mode.
fn queue_seq(sock: &impl AsRawFd, queue: libc::c_int) -> u32 {
    set_int(sock, TCP_REPAIR_QUEUE, queue);
    let seq = sockopt::int_option(sock, libc::IPPROTO_TCP, TCP_QUEUE_SEQ).expect("TCP_QUEUE_SEQ");
    // The kernel hands the 32-bit sequence number over in an int.
    seq as u32
}

/// One's-complement sum of 16-bit big-endian words.
fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + TCP segment (ACK|PSH, no options) from `from` to `to` carrying `data`.
fn segment(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    let total = 20 + 20 + data.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = libc::IPPROTO_TCP as u8;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let ip_sum = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH | ACK
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    tcp.extend_from_slice(data);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
    let tcp_sum = fold(sum16(&tcp, sum16(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

fn send_raw(packet: &[u8], to: Ipv4Addr) {
    // SAFETY: plain socket syscalls on a descriptor we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.octets()),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const addr).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, packet.len() as isize, "send the segment: {error}");
    }
}

fn v4(addr: std::net::SocketAddr) -> SocketAddrV4 {
    match addr {
        std::net::SocketAddr::V4(addr) => addr,
        std::net::SocketAddr::V6(addr) => panic!("not IPv4: {addr}"),
    }
}

/// This thread into a network namespace of its own, loopback up, TCP timestamps off.
fn private_network() {
    common::private_network();
    // Net sysctls are those of the namespace of whoever opens the file.
    std::fs::write("/proc/sys/net/ipv4/tcp_timestamps", "0").expect("turn off TCP timestamps");
}

#[test]
fn an_overlapping_retransmission_is_delivered_once() {
    run(
        "an_overlapping_retransmission_is_delivered_once",
        Case {
            first: 1000,
            repeated: 400,
            new: 600,
        },
    );
}

/// More repeated bytes than one `bpf_skb_adjust_room` call may remove (4 095): the head is
/// cut off in several steps.
#[test]
fn a_long_overlap_is_cut_off_in_steps() {
    run(
        "a_long_overlap_is_cut_off_in_steps",
        Case {
            first: 20_000,
            repeated: 3 * 4095 + 17,
            new: 600,
        },
    );
}

fn run(name: &str, case: Case) {
    if common::skip(name) {
        return;
    }
    // A thread of its own: the namespace stays with it.
    std::thread::spawn(move || overlapping_retransmission(case))
        .join()
        .expect("the test thread");
}

fn overlapping_retransmission(case: Case) {
    let Case {
        first: first_bytes,
        repeated: repeated_bytes,
        new: new_bytes,
    } = case;
    private_network();
    let ebpf = EbpfDataplane::load().expect("load the eBPF dataplane");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("listener address");
    let mut sender = TcpStream::connect(addr).expect("connect the sender");
    let (spliced, _) = listener.accept().expect("accept");
    let mut far = TcpStream::connect(addr).expect("connect the far end");
    let (near, _) = listener.accept().expect("accept");
    far.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");

    let keys = ebpf.splice(&spliced, &near, u64::MAX).expect("splice");
    let written_before = sockopt::tcp_counters(&near)
        .expect("counters")
        .bytes_written();
    let stream = payload(first_bytes + new_bytes, 3);
    sender
        .write_all(&stream[..first_bytes])
        .expect("send the first bytes");
    let mut got = vec![0u8; first_bytes];
    far.read_exact(&mut got).expect("the first bytes arrive");
    assert_eq!(got, stream[..first_bytes], "the first bytes");

    // Freeze the sender (nothing it sends from now on) and learn where both directions are.
    set_int(&sender, TCP_REPAIR, 1);
    let next_seq = queue_seq(&sender, TCP_SEND_QUEUE);
    let ack = queue_seq(&sender, TCP_RECV_QUEUE);
    let overlaps_before = ebpf.counter(counter::OVERLAP_BYTES);

    // What a retransmission with new segment boundaries looks like: it starts
    // `repeated_bytes` before the end of what was delivered and carries `new_bytes` more.
    let from = first_bytes - repeated_bytes;
    let packet = segment(
        v4(sender.local_addr().expect("sender address")),
        v4(addr),
        next_seq.wrapping_sub(repeated_bytes as u32),
        ack,
        &stream[from..],
    );
    send_raw(&packet, *v4(addr).ip());

    let mut got = vec![0u8; new_bytes];
    far.read_exact(&mut got).expect("the new bytes arrive");
    // Where the bytes read after the first `first_bytes` came from in the stream.
    let came_from = (0..first_bytes + new_bytes).find(|&at| stream[at..].starts_with(&got[..64]));
    assert_eq!(
        came_from,
        Some(first_bytes),
        "the bytes after the first {first_bytes} are the stream's from this offset on \
         (from {} on: the retransmitted head came again)",
        first_bytes - repeated_bytes
    );
    assert_eq!(got, stream[first_bytes..], "the new bytes");
    let (moved, _) = ebpf.flow_stats(keys);
    assert_eq!(
        moved.bytes,
        (first_bytes + new_bytes) as u64,
        "bytes the verdict redirected"
    );
    assert_eq!(moved.overlap_bytes, repeated_bytes as u64, "bytes cut off");
    assert_eq!(
        ebpf.counter(counter::OVERLAP_BYTES) - overlaps_before,
        repeated_bytes as u64,
        "the overlap counter"
    );
    assert_eq!(
        moved.seq_state & gateway_common::seq_state::ANOMALY,
        0,
        "no anomaly"
    );
    // Nothing more is on its way: everything written into `near` is what `far` read.
    let written = sockopt::tcp_counters(&near)
        .expect("counters")
        .bytes_written();
    assert_eq!(
        written - written_before,
        (first_bytes + new_bytes) as u64,
        "bytes written into the destination"
    );
    ebpf.unsplice(keys);
}

//! Unit tests of the shared hang-up watch, on real loopback sockets.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsFd as _,
    time::Duration,
};

use tokio::time::timeout;

use super::*;

/// How long a watch must stay quiet to count as not woken.
const QUIET: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(5);

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a listener")
}

/// A connected pair: the socket to watch, and its peer.
fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("listener address");
    let far = TcpStream::connect(addr).expect("connect");
    let (near, _) = listener.accept().expect("accept");
    (near, far)
}

async fn next_event(watch: &HangupWatch<'_>) -> [Events; 2] {
    timeout(DEADLINE, watch.next())
        .await
        .expect("an event in time")
        .expect("the watch works")
}

async fn assert_quiet(watch: &HangupWatch<'_>, what: &str) {
    if let Ok(events) = timeout(QUIET, watch.next()).await {
        panic!("{what}: woken with {events:?}");
    }
}

/// What a FIN from the peer reports.
const FIN: Events = Events {
    read_hangup: true,
    hangup: false,
    error: false,
    writable: false,
};

#[test]
fn tokens_round_trip() {
    for (generation, slot, index) in [(0, 0, 0), (u32::MAX, MAX_SLOTS - 1, 1), (7, 12_345, 1)] {
        let token = Token {
            generation,
            slot,
            index,
        };
        assert_eq!(Token::decode(token.encode()), token);
    }
}

#[tokio::test]
async fn a_fin_wakes_only_its_tunnel_and_socket() {
    let reactor = HangupReactor::new().expect("reactor");
    let listener = listener();
    let ((a0, _a0_far), (a1, a1_far)) = (pair(&listener), pair(&listener));
    let ((b0, _b0_far), (b1, _b1_far)) = (pair(&listener), pair(&listener));
    let a = HangupWatch::new(reactor.clone(), a0.as_fd(), a1.as_fd()).expect("watch a");
    let b = HangupWatch::new(reactor, b0.as_fd(), b1.as_fd()).expect("watch b");
    assert_quiet(&a, "a before any FIN").await;

    a1_far.shutdown(Shutdown::Write).expect("send FIN");
    let events = next_event(&a).await;
    assert_eq!(events, [Events::default(), FIN]);
    assert_quiet(&b, "b, whose peers sent nothing").await;
}

#[tokio::test]
async fn a_reset_reports_an_error() {
    let reactor = HangupReactor::new().expect("reactor");
    let listener = listener();
    let ((a0, a0_far), (a1, _a1_far)) = (pair(&listener), pair(&listener));
    let a = HangupWatch::new(reactor, a0.as_fd(), a1.as_fd()).expect("watch");
    crate::dataplane::sockopt::set_linger_zero(&a0_far).expect("arm a reset");
    drop(a0_far);
    let events = next_event(&a).await;
    assert!(events[0].error, "{events:?}");
    assert_eq!(events[1], Events::default());
}

/// Writes to `sock` until its send queue is full; returns how many bytes it took.
fn fill(sock: &TcpStream) -> usize {
    sock.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    loop {
        match (&*sock).write(&chunk) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return sent,
            Err(err) => panic!("fill the send queue: {err}"),
        }
    }
}

async fn drain(far: &TcpStream, bytes: usize) {
    let mut far = far.try_clone().expect("clone the peer");
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; bytes];
        far.read_exact(&mut buf).expect("the peer reads everything");
    })
    .await
    .expect("drain task");
}

#[tokio::test]
async fn writable_only_while_asked_for() {
    let reactor = HangupReactor::new().expect("reactor");
    let listener = listener();
    let ((a0, a0_far), (a1, _a1_far)) = (pair(&listener), pair(&listener));
    let sent = fill(&a0);
    let a = HangupWatch::new(reactor, a0.as_fd(), a1.as_fd()).expect("watch");
    drain(&a0_far, sent).await;
    assert_quiet(&a, "send queue drained, EPOLLOUT not asked for").await;

    let sent = fill(&a0);
    a.want_writable(0, true).expect("ask for EPOLLOUT");
    drain(&a0_far, sent).await;
    let events = next_event(&a).await;
    assert!(events[0].writable, "{events:?}");
    assert_eq!(events[1], Events::default());
}

#[tokio::test]
async fn a_stale_event_never_reaches_a_reused_slot() {
    let reactor = HangupReactor::new().expect("reactor");
    let listener = listener();
    let ((a0, _a0_far), (a1, _a1_far)) = (pair(&listener), pair(&listener));
    let ((b0, _b0_far), (b1, _b1_far)) = (pair(&listener), pair(&listener));
    let a = HangupWatch::new(reactor.clone(), a0.as_fd(), a1.as_fd()).expect("watch a");
    let stale = a.token(0);
    drop(a);
    let b = HangupWatch::new(reactor.clone(), b0.as_fd(), b1.as_fd()).expect("watch b");
    assert_eq!(b.slot_index, stale.slot, "b reuses a's slot");
    assert_ne!(b.generation, stale.generation);

    // An RST on a's socket 0, fetched by the dispatcher just before a deregistered.
    let reset = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
    let mut woken = Vec::new();
    let event = |token: Token| libc::epoll_event {
        events: reset,
        u64: token.encode(),
    };
    reactor.deliver(&[event(stale)], &mut woken);
    assert!(woken.is_empty(), "a stale event woke a tunnel");
    assert_quiet(&b, "b, after a's stale event").await;

    // The same event with b's own token reaches b.
    reactor.deliver(&[event(b.token(0))], &mut woken);
    assert_eq!(woken.len(), 1);
    for slot in woken.drain(..) {
        slot.notify.notify_one();
    }
    let events = next_event(&b).await;
    assert!(events[0].error && events[0].hangup, "{events:?}");
    assert_eq!(events[1], Events::default());
}

#[tokio::test]
async fn tunnels_share_one_epoll_set() {
    let listener = listener();
    let ((a0, _a0_far), (a1, _a1_far)) = (pair(&listener), pair(&listener));
    let ((b0, _b0_far), (b1, b1_far)) = (pair(&listener), pair(&listener));
    let reactor = LazyReactor::default();
    let a =
        HangupWatch::new(reactor.get().expect("reactor"), a0.as_fd(), a1.as_fd()).expect("watch a");
    let b =
        HangupWatch::new(reactor.get().expect("reactor"), b0.as_fd(), b1.as_fd()).expect("watch b");
    assert!(Arc::ptr_eq(&a.reactor, &b.reactor));
    b1_far.shutdown(Shutdown::Write).expect("send FIN");
    assert_eq!(next_event(&b).await, [Events::default(), FIN]);
}

#[test]
fn a_stopped_dispatcher_fails_its_tunnels() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let first = runtime();
    let reactor = first
        .block_on(async { HangupReactor::new() })
        .expect("reactor");
    let listener = listener();
    let ((a0, _a0_far), (a1, _a1_far)) = (pair(&listener), pair(&listener));
    let a = HangupWatch::new(reactor.clone(), a0.as_fd(), a1.as_fd()).expect("watch");
    drop(first);
    assert!(reactor.stopped.load(Ordering::Acquire));
    let result = runtime().block_on(async { timeout(DEADLINE, a.next()).await });
    assert!(matches!(result, Ok(Err(_))), "{result:?}");
}

#[test]
fn a_stopped_reactor_is_replaced_in_the_next_runtime() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let lazy = LazyReactor::default();
    let first = runtime();
    let stopped = first.block_on(async { lazy.get() }).expect("reactor");
    drop(first);
    assert!(stopped.stopped.load(Ordering::Acquire));

    let second = runtime();
    second.block_on(async {
        let reactor = lazy.get().expect("a new reactor");
        assert!(!Arc::ptr_eq(&reactor, &stopped));
        assert!(!reactor.stopped.load(Ordering::Acquire));
        // The new one works, and is the one handed out from now on.
        let listener = listener();
        let ((a0, _a0_far), (a1, a1_far)) = (pair(&listener), pair(&listener));
        let a = HangupWatch::new(reactor, a0.as_fd(), a1.as_fd()).expect("watch");
        a1_far.shutdown(Shutdown::Write).expect("send FIN");
        assert_eq!(next_event(&a).await, [Events::default(), FIN]);
        assert!(Arc::ptr_eq(&lazy.get().expect("reactor"), &a.reactor));
    });
}

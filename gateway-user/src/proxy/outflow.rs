//! What a client connection costs while the client is slow to take its answers: a bound on
//! the response bytes the gateway holds for it, and the send timeout.
//!
//! - [`Paced`] wraps a response body (a backend's, streamed): it takes the next piece from
//!   the backend only once the client's socket has taken the pieces it gave hyper. A
//!   client that stops reading thus stops the gateway reading the backend (whose
//!   connection TCP then slows down), with one piece (at most
//!   [`crate::upstream::client::READ_BUFFER_BYTES`]) held between the two sockets, where
//!   hyper's write buffer would take about 400 KiB. One piece in flight costs no
//!   throughput: the sockets' kernel buffers keep both sides busy (measured on loopback,
//!   10 Gbit/s either way).
//! - [`SendWatch`] wraps the client's socket: it counts the bytes written (what `Paced`
//!   compares against) and closes the connection when a write makes no progress for the
//!   send timeout (nginx's `send_timeout`: the time between two successive writes that
//!   move bytes, not the whole transfer). hyper sees the write fail with
//!   [`io::ErrorKind::TimedOut`]; [`Outflow::timed_out`] tells the connection's task why.
//!
//! Both are polled by the connection's task (hyper drives the socket and the response body
//! from the same future), so the waker `Paced` leaves is that task's.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stall::StallClock;

/// One client connection's outgoing side, shared by its socket ([`SendWatch`]) and the
/// response bodies it carries ([`Paced`]).
#[derive(Debug, Default)]
pub struct Outflow {
    /// Bytes written to the client's socket (heads and framing included).
    written: AtomicU64,
    /// Set when a write made no progress for the send timeout.
    timed_out: AtomicBool,
    /// A body waiting for the socket to take what it already gave.
    waiting: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Outflow {
    /// Whether the connection ended because the client took nothing for the send timeout.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    fn lock_waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Release);
        if self.waiting.swap(false, Ordering::AcqRel) {
            if let Some(waker) = self.lock_waker().take() {
                waker.wake();
            }
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Leaves `waker` to be woken by the next write.
    fn wait(&self, waker: &Waker) {
        let mut slot = self.lock_waker();
        match slot.as_mut() {
            Some(kept) if kept.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        self.waiting.store(true, Ordering::Release);
    }
}

/// A response body that gives hyper its next piece only once the client's socket has taken
/// the previous ones.
pub struct Paced<B> {
    inner: B,
    outflow: Arc<Outflow>,
    /// [`Outflow::written`] when the body was made: what the socket takes from then on is
    /// this answer's head and body (a previous answer's last bytes at most), so the bound
    /// can only be looser by that much, never stuck.
    written_before: u64,
    /// Data bytes given to hyper so far.
    given: u64,
}

impl<B> Paced<B> {
    pub fn new(inner: B, outflow: Arc<Outflow>) -> Self {
        let written_before = outflow.written();
        Self {
            inner,
            outflow,
            written_before,
            given: 0,
        }
    }

    /// Bytes given to hyper that the socket has not taken yet (at most; see
    /// `written_before`).
    fn unwritten(&self) -> u64 {
        let taken = self.outflow.written().saturating_sub(self.written_before);
        self.given.saturating_sub(taken)
    }
}

impl<B: Body + Unpin> Body for Paced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.unwritten() > 0 {
            this.outflow.wait(cx.waker());
            // A write may have landed between the check and the wait.
            if this.unwritten() > 0 {
                return Poll::Pending;
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.given += hyper::body::Buf::remaining(data) as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's socket, counting what it takes and timing out writes that make no
/// progress.
#[derive(Debug)]
pub struct SendWatch<IO> {
    inner: IO,
    outflow: Arc<Outflow>,
    clock: StallClock,
}

impl<IO> SendWatch<IO> {
    pub fn new(inner: IO, timeout: Duration) -> (Self, Arc<Outflow>) {
        let outflow = Arc::new(Outflow::default());
        let watch = Self {
            inner,
            outflow: outflow.clone(),
            clock: StallClock::new(timeout),
        };
        (watch, outflow)
    }

    /// The socket, e.g. after an upgrade: the tunnel takes it over, under its own limits.
    pub fn into_inner(self) -> IO {
        self.inner
    }

    /// What a write's outcome means for the clock: progress stops it; no progress starts
    /// it (or keeps it running), and past the timeout fails the write.
    fn account(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.clock.progress();
                self.outflow.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.poll_stall(cx).map(Err),
            other => other,
        }
    }

    /// `Ready(error)` once no write has made progress for the timeout.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.clock.poll_stalled(cx).map(|()| {
            self.outflow.timed_out.store(true, Ordering::Relaxed);
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took no response bytes for {}s (send timeout)",
                    self.clock.timeout().as_secs()
                ),
            )
        })
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.account(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.account(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// Under TLS a flush writes the records the session holds; it can stall like a write.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                this.clock.progress();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_stall(cx).map(Err),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, convert::Infallible, sync::atomic::AtomicUsize, task::Wake};

    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        time::Instant,
    };

    use super::*;

    /// A backend's answer: pieces, all there at once.
    struct Pieces(VecDeque<&'static [u8]>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|piece| Ok(Frame::data(Bytes::from_static(piece)))),
            )
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_for_the_timeout_fails() {
        // 16 bytes fit; a reader takes 8 more after 2 s, then nothing.
        let (near, mut far) = tokio::io::duplex(16);
        let (mut watch, outflow) = SendWatch::new(near, Duration::from_secs(3));
        let started = Instant::now();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut taken = [0; 8];
            far.read_exact(&mut taken).await.expect("read");
            far
        });
        let error = watch.write_all(&[7; 64]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(outflow.timed_out());
        // 2 s until the reader's progress, then the timeout without any.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(outflow.written(), 24);
        drop(reader.await.expect("the reader"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_taking_bytes_is_never_timed_out() {
        let (near, mut far) = tokio::io::duplex(16);
        let (mut watch, outflow) = SendWatch::new(near, Duration::from_secs(3));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = [0; 8];
            // 8 bytes every 2 s: 16 s for the whole write, never 3 s without progress.
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match far.read(&mut buf).await.expect("read") {
                    0 => return all,
                    n => all.extend_from_slice(&buf[..n]),
                }
            }
        });
        watch.write_all(&[7; 80]).await.expect("written");
        watch.shutdown().await.expect("shut down");
        assert_eq!(reader.await.expect("the reader"), [7; 80]);
        assert!(!outflow.timed_out());
    }

    #[tokio::test]
    async fn a_paced_body_gives_its_next_piece_once_the_socket_took_the_last() {
        let (near, _far) = tokio::io::duplex(1024);
        let (mut watch, outflow) = SendWatch::new(near, Duration::from_secs(60));
        let pieces = Pieces([&b"abc"[..], b"def"].into_iter().collect());
        let mut paced = Paced::new(pieces, outflow);
        let first = paced.frame().await.expect("a piece").expect("no error");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"abc"));
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut paced).poll_frame(&mut cx).is_pending());
        watch.write_all(b"ab").await.expect("write");
        assert!(Pin::new(&mut paced).poll_frame(&mut cx).is_pending());
        watch.write_all(b"c").await.expect("write");
        assert!(
            wakes.0.load(Ordering::Relaxed) >= 1,
            "the write woke the body"
        );
        match Pin::new(&mut paced).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                assert_eq!(frame.into_data().expect("data"), Bytes::from_static(b"def"));
            }
            other => panic!("the next piece, not {other:?}"),
        }
    }
}

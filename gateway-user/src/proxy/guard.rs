//! A client connection's socket, watched by a [`framing::Tracker`] on the way into hyper.
//! The handler asks [`Framing::conflicted`] before it forwards a request.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::Tracker;

/// What the tracker found, shared with the connection's handler.
#[derive(Debug, Default)]
pub struct Framing {
    /// 1 + the index of the request whose head had both `Transfer-Encoding` and
    /// `Content-Length`; 0 while none had.
    conflict: AtomicU64,
}

impl Framing {
    /// Whether request `index` (0 for the connection's first) had both headers. Its head
    /// passed through the tracker before hyper could hand the request to the handler.
    pub fn conflicted(&self, index: u64) -> bool {
        self.conflict.load(Ordering::Acquire) == index + 1
    }
}

/// `IO` with its incoming bytes fed to a tracker.
#[derive(Debug)]
pub struct Guarded<IO> {
    inner: IO,
    tracker: Tracker,
    framing: Arc<Framing>,
}

impl<IO> Guarded<IO> {
    pub fn new(inner: IO) -> (Self, Arc<Framing>) {
        let framing = Arc::new(Framing::default());
        let guarded = Self {
            inner,
            tracker: Tracker::default(),
            framing: framing.clone(),
        };
        (guarded, framing)
    }

    /// The socket, e.g. after an upgrade: the tunnel takes it over.
    pub fn into_inner(self) -> IO {
        self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if let Some(index) = this.tracker.feed(&buf.filled()[before..]) {
                this.framing.conflict.store(index + 1, Ordering::Release);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

//! The backend's share of the handshake timeout. The clock counts time the gateway waits on
//! the backend only: while a request body is passed on, it restarts with each piece the
//! backend takes and stops while the gateway waits for the client's next piece (the body
//! timeout covers that wait), so a body the client uploads slowly but steadily does not run
//! it out, while a backend that stops taking the body, or does not answer once it has all
//! of it, does.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// A request body that reports each frame passed on to the backend, each wait for the
/// client, and its end (the sender is dropped then, or when the body is dropped).
pub struct Progress<B> {
    inner: B,
    sent: Option<watch::Sender<Waiting>>,
    failed: Arc<AtomicBool>,
}

/// Whom the request is waiting on while its body is passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A piece went out (or the request started): the backend must take it.
    Backend,
    /// The backend asked for the next piece, which the client has not sent yet.
    Client,
}

/// Whether the client's body failed while it was passed on (malformed chunked framing, a
/// reset mid-body): the forward then failed by the client's fault, not the backend's.
#[derive(Clone, Debug)]
pub struct BodyFailed(Arc<AtomicBool>);

impl BodyFailed {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What [`deadline`] watches; `None` when the request has no body.
pub type ProgressWatch = Option<watch::Receiver<Waiting>>;

impl<B: Body> Progress<B> {
    pub fn new(inner: B) -> (Self, ProgressWatch) {
        let failed = Arc::default();
        if inner.is_end_stream() {
            // hyper never polls an empty body: nothing to watch.
            let body = Self {
                inner,
                sent: None,
                failed,
            };
            return (body, None);
        }
        let (sent, watch) = watch::channel(Waiting::Backend);
        let body = Self {
            inner,
            sent: Some(sent),
            failed,
        };
        (body, Some(watch))
    }

    /// Tells afterwards whether the body failed.
    pub fn failures(&self) -> BodyFailed {
        BodyFailed(self.failed.clone())
    }
}

impl<B: Body + Unpin> Body for Progress<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => {
                if let Some(sent) = &this.sent {
                    sent.send_replace(Waiting::Backend);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.failed.store(true, Ordering::Relaxed);
                this.sent = None;
            }
            // The last frame, or the end: the body is done either way.
            Poll::Ready(_) => this.sent = None,
            Poll::Pending => {
                if let Some(sent) = &this.sent {
                    sent.send_if_modified(|waiting| {
                        let was = std::mem::replace(waiting, Waiting::Client);
                        was != Waiting::Client
                    });
                }
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

/// Resolves when the backend has kept the handshake waiting `timeout` too long: from the
/// start for a request without a body; otherwise `timeout` without a body frame taken
/// (not counting waits for the client), or `timeout` after the whole body was passed on.
pub async fn deadline(progress: ProgressWatch, timeout: Duration) {
    if let Some(mut progress) = progress {
        loop {
            let waiting = *progress.borrow_and_update();
            let changed = match waiting {
                // The client's body timeout covers this wait.
                Waiting::Client => progress.changed().await,
                Waiting::Backend => {
                    match tokio::time::timeout(timeout, progress.changed()).await {
                        Ok(changed) => changed, // a frame went out: the clock restarts
                        Err(_) => return,       // the backend stopped taking the body
                    }
                }
            };
            if changed.is_err() {
                break; // the body is all out (or dropped)
            }
        }
    }
    tokio::time::sleep(timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty, Full};

    #[tokio::test(start_paused = true)]
    async fn a_bodiless_request_gets_the_timeout_from_the_start() {
        let (_body, watch) = Progress::new(Empty::<Bytes>::new());
        assert!(watch.is_none());
        let started = tokio::time::Instant::now();
        deadline(watch, Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_nobody_takes_runs_the_clock_out() {
        let (_body, watch) = Progress::new(Full::new(Bytes::from_static(b"abc")));
        let started = tokio::time::Instant::now();
        deadline(watch, Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_restarts_when_the_body_goes_out() {
        let (mut body, watch) = Progress::new(Full::new(Bytes::from_static(b"abc")));
        let watch = watch.expect("a body with bytes is watched");
        let started = tokio::time::Instant::now();
        let timer = tokio::spawn(deadline(Some(watch), Duration::from_secs(3)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let frame = body.frame().await.expect("one frame").expect("no error");
        assert_eq!(frame.into_data().expect("data"), Bytes::from_static(b"abc"));
        timer.await.expect("deadline task");
        // 2 s before the body went out, then the full timeout after it.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    /// A body whose next piece has not come: a client uploading slowly.
    struct Slow {
        pieces: std::collections::VecDeque<Option<&'static [u8]>>,
    }

    impl Body for Slow {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        /// `None` in `pieces`: pending once (the client has sent nothing yet).
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.pieces.pop_front() {
                None => Poll::Ready(None),
                Some(Some(piece)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(piece))))),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }

        fn is_end_stream(&self) -> bool {
            self.pieces.is_empty()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_client_do_not_count() {
        let pieces = [Some(&b"a"[..]), None, Some(&b"b"[..])]
            .into_iter()
            .collect();
        let (mut body, watch) = Progress::new(Slow { pieces });
        let watch = watch.expect("a body with bytes is watched");
        let started = tokio::time::Instant::now();
        let timer = tokio::spawn(deadline(Some(watch), Duration::from_secs(3)));
        // The first piece goes out at once; the client then takes 10 s for the next.
        body.frame().await.expect("a").expect("no error");
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx).is_pending()))
                .await;
        assert!(pending, "the client has not sent its next piece");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            !timer.is_finished(),
            "waiting on the client is not the backend's time"
        );
        body.frame().await.expect("b").expect("no error");
        timer.await.expect("deadline task");
        // The full timeout runs from the end of the body.
        assert_eq!(started.elapsed(), Duration::from_secs(13));
    }
}

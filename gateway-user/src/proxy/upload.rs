//! A client's request body on its way to a backend: read into memory before a backend is
//! chosen (nginx's `proxy_request_buffering`, HAProxy's `http-buffer-request`), so a client
//! that uploads slowly holds a connection to the gateway, not to a backend; and under the
//! body timeout (nginx's `client_body_timeout`: the time between two reads, `408` when it
//! runs out) from its first byte to its last.
//!
//! Up to `[global] request_buffer_bytes` are read first; a body that ends by then goes to
//! the backend whole, a longer one is streamed once the buffer is full (the client must
//! send that much before it can hold a backend connection). Nothing is spooled to disk.
//! The bytes are copied into one buffer as they come: a client trickling a byte at a time
//! would otherwise pin one of hyper's read buffers per byte.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prometheus_client::metrics::gauge::Gauge;

use super::stall::StallClock;
use crate::body::BodyError;

/// A client's body (hyper's `Incoming`, or a test's) under the body timeout.
pub struct Timed<B = Incoming> {
    inner: B,
    clock: StallClock,
}

impl<B> Timed<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            clock: StallClock::new(timeout),
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.clock.progress();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(BodyError::Client(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => this
                .clock
                .poll_stalled(cx)
                .map(|()| Some(Err(BodyError::Timeout(this.clock.timeout())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body: what was read before the backend was chosen, then the rest as it comes.
/// Framed as the client framed it: a `Content-Length` body keeps its length (the header
/// goes to the backend as sent), a chunked one stays chunked (its size is not announced).
pub struct Upload<B = Incoming> {
    /// The bytes read ahead, given to hyper as one piece.
    held: Bytes,
    /// The trailers of a chunked body that ended while it was read ahead.
    trailers: Option<HeaderMap>,
    /// The rest of the body; `None` once it ended.
    rest: Option<Timed<B>>,
    /// The client announced no length (chunked).
    chunked: bool,
    /// `gateway_request_buffered_bytes`: holds `held`'s length until it is given to hyper.
    gauge: Gauge,
}

impl<B> Upload<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    /// Reads `body` until it ends or `limit` bytes have come (0: reads nothing), under the
    /// body timeout.
    pub async fn read(
        body: B,
        limit: u64,
        timeout: Duration,
        gauge: Gauge,
    ) -> Result<Self, BodyError> {
        let hint = body.size_hint();
        let chunked = hint.exact().is_none();
        let mut rest = Timed::new(body, timeout);
        // The buffer grows as bytes come, never ahead of them: a client that announces a
        // body and sends none holds no buffer. The last read may take it past the limit by
        // one read of hyper's (64 KiB at most).
        let mut held = BytesMut::new();
        let mut counted = Counted::new(gauge.clone());
        let mut trailers = None;
        let mut ended = rest.is_end_stream();
        while !ended && (held.len() as u64) < limit {
            match rest.frame().await {
                None => ended = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        held.extend_from_slice(&data);
                        counted.add(data.len());
                        ended = rest.is_end_stream();
                    }
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        ended = true;
                    }
                },
                Some(Err(error)) => return Err(error),
            }
        }
        counted.keep();
        Ok(Self {
            held: held.freeze(),
            trailers,
            rest: (!ended).then_some(rest),
            chunked,
            gauge,
        })
    }

    /// Whether the whole body was read ahead.
    pub fn is_whole(&self) -> bool {
        self.rest.is_none()
    }
}

impl<B> Body for Upload<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if !this.held.is_empty() {
            let held = std::mem::take(&mut this.held);
            this.gauge.dec_by(gauge_bytes(held.len()));
            return Poll::Ready(Some(Ok(Frame::data(held))));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.rest = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Timed::is_end_stream)
    }

    /// A `Content-Length` body's exact remaining length; a chunked body's is never exact,
    /// so hyper sends it chunked (a `Content-Length` from the client goes through as a
    /// header).
    fn size_hint(&self) -> SizeHint {
        let held = self.held.len() as u64;
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Timed::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(held + rest.lower());
        if !self.chunked {
            if let Some(upper) = rest.upper() {
                hint.set_upper(held + upper);
            }
        }
        hint
    }
}

impl<B> Drop for Upload<B> {
    fn drop(&mut self) {
        self.gauge.dec_by(gauge_bytes(self.held.len()));
    }
}

/// Bytes added to the gauge while reading ahead; taken back if the read fails.
struct Counted {
    gauge: Gauge,
    bytes: usize,
}

impl Counted {
    fn new(gauge: Gauge) -> Self {
        Self { gauge, bytes: 0 }
    }

    fn add(&mut self, bytes: usize) {
        self.gauge.inc_by(gauge_bytes(bytes));
        self.bytes += bytes;
    }

    /// The bytes now belong to an [`Upload`], which takes them back.
    fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.dec_by(gauge_bytes(self.bytes));
    }
}

fn gauge_bytes(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt as _;
    use tokio::time::{Instant, Sleep};

    use super::*;

    /// What a test client does next.
    enum Step {
        Send(&'static [u8]),
        Pause(Duration),
        Trailers,
    }

    /// A client's body played from a script; `Some(len)`: announced with a Content-Length.
    struct Script {
        steps: VecDeque<Step>,
        length: Option<u64>,
        sent: u64,
        pause: Option<Pin<Box<Sleep>>>,
    }

    impl Script {
        fn new(length: Option<u64>, steps: impl IntoIterator<Item = Step>) -> Self {
            Self {
                steps: steps.into_iter().collect(),
                length,
                sent: 0,
                pause: None,
            }
        }
    }

    impl Body for Script {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            loop {
                if let Some(pause) = self.pause.as_mut() {
                    std::task::ready!(pause.as_mut().poll(cx));
                    self.pause = None;
                }
                match self.steps.pop_front() {
                    None => return Poll::Ready(None),
                    Some(Step::Send(bytes)) => {
                        self.sent += bytes.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(bytes)))));
                    }
                    Some(Step::Trailers) => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Some(Step::Pause(pause)) => {
                        self.pause = Some(Box::pin(tokio::time::sleep(pause)));
                    }
                }
            }
        }

        fn is_end_stream(&self) -> bool {
            self.steps.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            match self.length {
                Some(length) => SizeHint::with_exact(length - self.sent),
                None => SizeHint::new(),
            }
        }
    }

    use std::future::Future as _;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Every frame the upload gives hyper: data concatenated, and whether trailers came.
    async fn drain(mut upload: Upload<Script>) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        let mut trailers = false;
        while let Some(frame) = upload.frame().await {
            let frame = frame.expect("no error");
            match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.is_trailers(),
            }
        }
        (data, trailers)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_under_the_limit_is_read_whole_and_keeps_its_length() {
        let gauge = Gauge::default();
        let script = Script::new(
            Some(6),
            [
                Step::Send(b"abc"),
                Step::Pause(TIMEOUT / 2),
                Step::Send(b"def"),
            ],
        );
        let upload = Upload::read(script, 1024, TIMEOUT, gauge.clone())
            .await
            .expect("read");
        assert!(upload.is_whole());
        assert_eq!(gauge.get(), 6, "the bytes are counted while held");
        assert_eq!(upload.size_hint().exact(), Some(6), "a Content-Length body");
        assert_eq!(drain(upload).await, (b"abcdef".to_vec(), false));
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunked_body_stays_chunked_with_its_trailers() {
        let gauge = Gauge::default();
        let script = Script::new(None, [Step::Send(b"abc"), Step::Trailers]);
        let upload = Upload::read(script, 1024, TIMEOUT, gauge.clone())
            .await
            .expect("read");
        assert!(upload.is_whole());
        assert_eq!(upload.size_hint().exact(), None, "no length: sent chunked");
        assert_eq!(drain(upload).await, (b"abc".to_vec(), true));
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_limit_is_streamed_after_it() {
        let gauge = Gauge::default();
        let steps = [Step::Send(b"abc"), Step::Send(b"def"), Step::Send(b"ghi")];
        let upload = Upload::read(Script::new(Some(9), steps), 4, TIMEOUT, gauge.clone())
            .await
            .expect("read");
        assert!(!upload.is_whole());
        assert_eq!(gauge.get(), 6, "read up to the limit, by whole pieces");
        assert_eq!(upload.size_hint().exact(), Some(9));
        assert_eq!(drain(upload).await, (b"abcdefghi".to_vec(), false));
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_of_0_reads_nothing_ahead() {
        let gauge = Gauge::default();
        let upload = Upload::read(
            Script::new(Some(3), [Step::Send(b"abc")]),
            0,
            TIMEOUT,
            gauge.clone(),
        )
        .await
        .expect("read");
        assert!(!upload.is_whole());
        assert_eq!(gauge.get(), 0);
        assert_eq!(drain(upload).await, (b"abc".to_vec(), false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_times_out_and_frees_its_bytes() {
        let gauge = Gauge::default();
        let started = Instant::now();
        let steps = [
            Step::Send(b"abc"),
            Step::Pause(TIMEOUT * 100),
            Step::Send(b"def"),
        ];
        let result = Upload::read(Script::new(Some(6), steps), 1024, TIMEOUT, gauge.clone()).await;
        assert!(matches!(result, Err(BodyError::Timeout(t)) if t == TIMEOUT));
        assert_eq!(started.elapsed(), TIMEOUT, "from the last byte");
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_also_covers_what_is_streamed() {
        let gauge = Gauge::default();
        let steps = [
            Step::Send(b"abc"),
            Step::Pause(TIMEOUT * 100),
            Step::Send(b"def"),
        ];
        let mut upload = Upload::read(Script::new(Some(6), steps), 2, TIMEOUT, gauge)
            .await
            .expect("read");
        let first = upload.frame().await.expect("a frame").expect("no error");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"abc"));
        let started = Instant::now();
        let second = upload.frame().await.expect("an outcome");
        assert!(matches!(second, Err(BodyError::Timeout(_))));
        assert_eq!(started.elapsed(), TIMEOUT);
        assert!(upload.frame().await.is_none(), "nothing after the failure");
    }
}

//! The clock of nginx's `send_timeout` and `client_body_timeout`: the time since an I/O
//! that could not proceed, counted from the first such poll after the last one that did,
//! not over the whole transfer. Polled from inside `poll_*` methods, so it registers the
//! task's waker with the timer and the task wakes when it runs out.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct StallClock {
    timeout: Duration,
    /// Made at the first stall and reset at each later one: a connection that stalled once
    /// probably stalls again, and a reset costs less than an allocation.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the clock runs: an I/O could not proceed, and none has since.
    running: bool,
}

impl StallClock {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            running: false,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An I/O proceeded: the clock stops.
    pub fn progress(&mut self) {
        self.running = false;
    }

    /// An I/O could not proceed: starts the clock if it is stopped; `Ready` once it has run
    /// for the timeout.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let restart = !self.running;
        self.running = true;
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if restart {
                    sleep.as_mut().reset(Instant::now() + self.timeout);
                }
                sleep
            }
            empty @ None => empty.insert(Box::pin(tokio::time::sleep(self.timeout))),
        };
        sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_out_only_after_the_timeout_without_progress() {
        let mut clock = StallClock::new(Duration::from_secs(3));
        let started = Instant::now();
        // Stalls, progresses after 2 s, stalls again: the timeout counts from there.
        assert!(poll_fn(|cx| Poll::Ready(clock.poll_stalled(cx)))
            .await
            .is_pending());
        tokio::time::sleep(Duration::from_secs(2)).await;
        clock.progress();
        poll_fn(|cx| clock.poll_stalled(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_in_a_row_do_not_restart_it() {
        let mut clock = StallClock::new(Duration::from_secs(3));
        let started = Instant::now();
        assert!(poll_fn(|cx| Poll::Ready(clock.poll_stalled(cx)))
            .await
            .is_pending());
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Still no progress: the same clock goes on.
        poll_fn(|cx| clock.poll_stalled(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}

//! Deadlines and polling. Tests wait on conditions, never on the clock alone.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Interval between two checks of a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`: a hang becomes a failure
/// that names the step, not a stuck test run.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` until it returns `Ok`, panicking with `what` and the last reason it gave if
/// that has not happened within `limit`.
pub async fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + limit;
    loop {
        let reason = match check() {
            Ok(()) => return,
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            panic!("{what}: still not true after {limit:?}: {reason}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

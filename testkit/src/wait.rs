//! Waiting for a condition with a deadline, never for an assumed speed.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `condition` until it holds, failing the test with `what` when `timeout` passes
/// first. A plain boolean condition is written `|| std::future::ready(cond())`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it returns `Some`, and returns that value; fails the test with
/// `what` when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut polls = 0;
        wait_until("the third poll", Duration::from_secs(5), || {
            polls += 1;
            std::future::ready(polls >= 3)
        })
        .await;
        assert_eq!(polls, 3);
        let mut count = 0;
        let value = eventually("a value", Duration::from_secs(5), || {
            count += 1;
            std::future::ready((count == 2).then_some("found"))
        })
        .await;
        assert_eq!(value, "found");
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting until never")]
    async fn fails_with_what_it_waited_for() {
        wait_until("never", Duration::from_millis(50), || {
            std::future::ready(false)
        })
        .await;
    }
}

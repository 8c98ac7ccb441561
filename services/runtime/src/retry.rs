//! One backoff loop for background work that must succeed sooner or later (a store's preparation,
//! a topic's creation): tried at once, then again after 0.5 s doubling to 10 s, each failure handed
//! to the caller to log or show, until it works or `stop` is cancelled.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First pause after a failure.
pub const FIRST_WAIT: Duration = Duration::from_millis(500);
/// Longest pause between attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Runs `attempt` until it returns `Ok` (Some) or `stop` is cancelled (None); `failed` gets each
/// error and the pause before the next try.
pub async fn until_ok<T, E, F, Fut>(
    stop: &CancellationToken,
    mut attempt: F,
    mut failed: impl FnMut(&E, Duration),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = FIRST_WAIT;
    loop {
        match attempt().await {
            Ok(v) => return Some(v),
            Err(e) => failed(&e, wait),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return None,
        }
        wait = (wait * 2).min(MAX_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_with_doubling_pauses_until_it_works() {
        let mut calls = 0;
        let mut pauses = Vec::new();
        let got = until_ok(
            &CancellationToken::new(),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 6 { Err(n) } else { Ok(n) } }
            },
            |_, wait| pauses.push(wait.as_millis()),
        )
        .await;
        assert_eq!(got, Some(6));
        assert_eq!(pauses, vec![500, 1000, 2000, 4000, 8000]);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_told() {
        let stop = CancellationToken::new();
        stop.cancel();
        let got: Option<()> = until_ok(&stop, || async { Err::<(), _>("down") }, |_, _| {}).await;
        assert_eq!(got, None);
    }
}

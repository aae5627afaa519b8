//! Retries of transient failures: how long to keep trying ([`Retry`]),
//! exponential backoff with jitter, and a server's `Retry-After`, never past
//! a deadline, each retry logged with its reason and cut short by a signal.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log;
use crate::random::random_unit;

/// How long to keep trying a transient failure.
#[derive(Clone, Copy, Debug)]
pub enum Retry {
    /// This many retries after the first try.
    Times(u32),
    /// As many as fit before this instant (login at pod start).
    Until(Instant),
    /// At most this many retries, none starting after this instant.
    TimesUntil(u32, Instant),
}

/// The least time a retry before a deadline is given.
const MIN_TRY: Duration = Duration::from_millis(250);

/// Runs `op` until it succeeds, fails for good, or `retry` is used up,
/// sleeping with [`backoff`] (at least `Retry-After`, up to `timeout`) between tries and
/// logging each retry with its reason. `op` gets the time it may take.
pub fn retrying<T>(
    retry: Retry,
    timeout: Duration,
    mut op: impl FnMut(Duration) -> Result<T>,
) -> Result<T> {
    let mut attempt = 0u32;
    loop {
        let budget = match retry {
            Retry::Until(deadline) | Retry::TimesUntil(_, deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(timeout),
            Retry::Times(_) => timeout,
        };
        let err = match op(budget) {
            Ok(v) => return Ok(v),
            Err(err) => err,
        };
        if !err.is_transient() {
            return Err(err);
        }
        let retry_after = match &err {
            Error::Api { retry_after, .. } => retry_after.map(Duration::from_secs),
            _ => None,
        };
        // A server's Retry-After is honoured up to the client timeout: a
        // broken proxy's "30 years" must not stall a request that has no
        // deadline (a synchronizer read) for that long.
        let retry_after = retry_after.unwrap_or_default().min(timeout);
        let mut wait = backoff(attempt).max(retry_after);
        let deadline = match retry {
            Retry::Times(max) | Retry::TimesUntil(max, _) if attempt >= max => return Err(err),
            Retry::Times(_) => None,
            Retry::Until(deadline) | Retry::TimesUntil(_, deadline) => Some(deadline),
        };
        if let Some(deadline) = deadline {
            // Keep time for one real try after the wait: a try cut short
            // by the deadline would only report a timeout, hiding the
            // server's own error.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(MIN_TRY);
            if left.is_zero() {
                return Err(err);
            }
            wait = wait.min(left);
        }
        attempt += 1;
        log::warn(format!(
            "retrying in {:.1}s (attempt {}): {err}",
            wait.as_secs_f64(),
            attempt + 1
        ));
        if crate::signals::sleep(wait) {
            return Err(Error::Interrupted);
        }
    }
}

/// Exponential backoff with ±25% jitter: 250 ms doubling to at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250) * 2u32.saturating_pow(attempt.min(5));
    let base = base.min(Duration::from_secs(8));
    base.mul_f64(0.75 + 0.5 * random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..10 {
            let d = backoff(attempt);
            let base = (250u64 << attempt.min(5)).min(8000) as f64;
            let ms = d.as_millis() as f64;
            assert!(ms >= base * 0.74 && ms <= base * 1.26, "{attempt}: {ms}");
        }
    }
}

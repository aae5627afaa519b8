//! Client-side rate limit of Vault requests (`VAULT_RATE_LIMIT`): a token
//! bucket shared by every thread of a client, with the semantics of Go's
//! `rate.Limiter` that Vault's Go client used. A request takes one token;
//! when none is left it waits for its turn, so waiting requests queue in
//! order and the long-run rate never exceeds the limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    /// Tokens available at `at`; negative when requests are queued.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// Starts with a full bucket, as Go's limiter.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    /// Takes one token and says how long the caller must wait before
    /// sending, if that is at most `max` (the time left to the request's
    /// deadline). Otherwise it takes nothing and returns the wait as the
    /// error, as Go's `Limiter.Wait` with a context deadline: waiting would
    /// only end in a timeout, and a refused try must not push every later
    /// turn further away. Never panics, however small the rate.
    pub fn reserve_within(&self, max: Duration) -> Result<Duration, Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, at) = *state;
        let refilled = now.saturating_duration_since(at).as_secs_f64() * self.limit.per_second;
        let tokens = (tokens + refilled).min(f64::from(self.limit.burst)) - 1.0;
        let wait = if tokens >= 0.0 {
            Duration::ZERO
        } else {
            // 1e-20 requests/s gives a wait no Duration holds.
            Duration::try_from_secs_f64(-tokens / self.limit.per_second).unwrap_or(Duration::MAX)
        };
        if wait > max {
            return Err(wait);
        }
        *state = (tokens, now);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(limiter.reserve_within(Duration::MAX), Ok(Duration::ZERO));
        }
        // The 4th and 5th queue behind each other: 0.5 s, then 1 s.
        let fourth = limiter.reserve_within(Duration::MAX).unwrap();
        let fifth = limiter.reserve_within(Duration::MAX).unwrap();
        assert!(fourth > Duration::from_millis(450) && fourth <= Duration::from_millis(500));
        assert!(fifth > Duration::from_millis(950) && fifth <= Duration::from_millis(1000));
    }

    #[test]
    fn a_wait_past_the_deadline_takes_no_token_and_never_panics() {
        // 1e-20 per second: the second request's turn is 1e20 s away, more
        // than a Duration holds (Duration::from_secs_f64 would panic).
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1e-20,
            burst: 1,
        });
        let max = Duration::from_secs(60);
        assert_eq!(limiter.reserve_within(max), Ok(Duration::ZERO));
        for _ in 0..3 {
            let wait = limiter.reserve_within(max).unwrap_err();
            assert!(wait > max, "{wait:?}");
        }
        // Refused tries took no token: with 2/s, after the burst the next
        // turn is still 0.5 s away, however often a try was refused.
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 1,
        });
        assert_eq!(limiter.reserve_within(max), Ok(Duration::ZERO));
        for _ in 0..5 {
            assert!(limiter.reserve_within(Duration::from_millis(100)).is_err());
        }
        let wait = limiter.reserve_within(max).unwrap();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
    }
}

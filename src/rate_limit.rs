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

    /// Takes one token and says how long the caller must wait before sending.
    pub fn reserve(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, at) = *state;
        let refilled = now.saturating_duration_since(at).as_secs_f64() * self.limit.per_second;
        let tokens = (tokens + refilled).min(f64::from(self.limit.burst)) - 1.0;
        *state = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.limit.per_second)
        }
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
            assert_eq!(limiter.reserve(), Duration::ZERO);
        }
        // The 4th and 5th queue behind each other: 0.5 s, then 1 s.
        let fourth = limiter.reserve();
        let fifth = limiter.reserve();
        assert!(fourth > Duration::from_millis(450) && fourth <= Duration::from_millis(500));
        assert!(fifth > Duration::from_millis(950) && fifth <= Duration::from_millis(1000));
    }
}

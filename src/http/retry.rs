//! Retries of transient failures: how long to keep trying ([`Retry`]),
//! exponential backoff with jitter, and a server's `Retry-After`, never past
//! a deadline, each retry logged with its reason and cut short by a signal.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
        // Without a client timeout (VAULT_CLIENT_TIMEOUT=0), up to Go's
        // default timeout of 60 s.
        let cap = crate::time::timeout_or_none(timeout).unwrap_or(Duration::from_secs(60));
        let retry_after = retry_after.unwrap_or_default().min(cap);
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

/// Seconds to wait from a `Retry-After` value (RFC 9110, section 10.2.3):
/// a number of seconds, or an HTTP date in the form every sender must use
/// (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`), counted from `now` (0
/// for a date in the past). Proxies and load balancers send dates. `None`
/// for anything else (the two obsolete date forms included): the backoff
/// alone applies.
pub fn retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(at.saturating_sub(now))
}

/// Seconds since the epoch of an IMF-fixdate.
fn http_date(value: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [weekday, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    if !weekday.ends_with(',') || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let year: u64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let mut hms = time.split(':').map(|n| n.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil), years from March so leap days come last.
    let (y, mp) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let (era, yoe) = (y / 400, y % 400);
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after(" 120 ", now), Some(120));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(0));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(30));
        assert_eq!(retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(0));
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(
            http_date("Wed, 01 Dec 2026 01:02:03 GMT"),
            Some(1_796_086_923)
        );
        for bad in [
            "",
            "soon",
            "-5",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

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

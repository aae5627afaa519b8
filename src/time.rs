//! Deadline arithmetic that never panics: durations come from the
//! environment and from servers, and may be larger than an `Instant` holds.

use std::time::{Duration, Instant};

/// `from + d`, without the panic `Instant + Duration` has on overflow:
/// durations come from the environment and from servers, and may be larger
/// than an `Instant` holds. Beyond that, a century away is the same as never.
pub fn instant_after(from: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(d.min(CENTURY))
        .or_else(|| from.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(from)
}

/// "No timeout": `VAULT_CLIENT_TIMEOUT=0`, as in Vault's Go client. A
/// century, the horizon of [`instant_after`]; the HTTP layer hands ureq no
/// timeout at all for it.
pub const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d`, or `None` for [`NO_TIMEOUT`] (and anything as long).
pub fn timeout_or_none(d: Duration) -> Option<Duration> {
    (d < NO_TIMEOUT).then_some(d)
}

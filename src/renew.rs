//! vault-kubernetes-token-renewer: keeps the token in `VAULT_TOKEN_PATH`
//! alive for the pod's lifetime.
//!
//! One thread sleeps in `poll` on two descriptors, inotify (the token's
//! directory, so another writer's atomic rename is seen) and the signal
//! pipe, with the time to the next action as timeout: no wake-up between
//! events. Renewal timing follows Vault Agent's lifetime watcher: with
//! `remaining` the lease left and `grace` 10–20% of the lease, act after
//! `2/3·remaining + grace/3`. A token that can no longer be extended
//! (non-renewable, or capped by its max TTL) is replaced by a new login on
//! the same schedule with `VAULT_REAUTH=true`; without it the program exits
//! non-zero before the token expires, saying why, so the pod restarts visibly.
//!
//! Under faults: a renewal never outlives the token (each try ends by its
//! expiry less a margin, and tries shrink as it nears, see [`renew_deadline`]);
//! a signal abandons any request at once (see `crate::http`), and the
//! revoke on shutdown then runs for every token in hand, whatever step was
//! interrupted, within [`REVOKE_WITHIN`]; only Vault's 400/401/403 make a
//! token invalid (a SIGTERM, a timeout, a 5xx never do: a handed-over token
//! Vault cannot check yet is kept, not overwritten, and an unreachable
//! Vault at start is waited for); a token file that is not a regular file
//! holding a token (a FIFO, a link, garbage) is never blocked on and is
//! replaced by a new login with `VAULT_REAUTH`; logins after a failure are
//! paced by [`backoff`] from the previous one, whatever Vault answers; and
//! without inotify (instances or watches used up by other processes of the
//! same uid) the file is watched by polling its metadata every [`POLL_INTERVAL`](crate::watch::POLL_INTERVAL).

use std::time::{Duration, Instant};

use crate::config::RenewerConfig;
use crate::error::{Error, Result};
use crate::events::{Reason, Recorder};
use crate::http::{backoff, Retry};
use crate::random::random_unit;
use crate::secret::Secret;
use crate::signals::Shutdown;
use crate::time::instant_after;
use crate::vault::VaultClient;
use crate::watch::{wait, Wake, Watch};
use crate::{log, token_file};

/// The token being kept alive.
struct Held {
    token: Secret,
    /// When Vault will expire it.
    expires: Instant,
    /// Length of the current lease, for the grace period.
    lease: Duration,
    /// Whether a renewal can still extend it.
    extendable: bool,
    /// Why it cannot, for messages.
    reason: &'static str,
    /// TTL asked for at each renewal (VAULT_TTL, else the token's own).
    wanted: Duration,
    /// The longest lease Vault has given this token: what a VAULT_TTL above
    /// every max TTL (up to 292 years) really buys, for the grace period.
    longest: Duration,
    /// Transient failures in a row.
    failures: u32,
    /// Next action.
    next: Instant,
}

impl Held {
    /// 10–20% of the full lease (not of a lease shortened by max TTL, so a
    /// last short lease still leaves time to log in again or to exit).
    /// A `wanted` beyond any lease Vault gives would make the grace larger
    /// than every lease: a new login at once, again and again.
    fn grace(&self) -> Duration {
        self.lease
            .max(self.wanted.min(self.longest))
            .mul_f64(0.1 + 0.1 * random_unit())
    }

    fn schedule(&mut self) {
        let now = Instant::now();
        let remaining = self.expires.saturating_duration_since(now);
        let grace = self.grace();
        let sleep = remaining.mul_f64(2.0 / 3.0) + grace / 3;
        self.next = instant_after(now, sleep.min(remaining.saturating_sub(grace)));
    }
}

/// The least time between two scheduled Vault calls, whatever the answers.
const FLOOR: Duration = Duration::from_millis(250);
/// Bound of the revoke on shutdown, all its `revoke-self` calls together
/// (the held token, and one the renewer was checking or had just got when
/// the signal came): Kubernetes' grace period is 30 s by default, and the
/// docs promise an exit within a few seconds (docs/safety.md).
const REVOKE_WITHIN: Duration = Duration::from_secs(2);

/// How long a login in flight when the signal comes may take to answer,
/// with `VAULT_REVOKE_ON_SHUTDOWN`: its token is then revoked with the
/// others, within [`REVOKE_WITHIN`]. The exit bound is the sum, 3 s.
const LOGIN_ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Pacing of logins that follow a failure (revoked token, unusable file):
/// each waits [`backoff`] of the failures in a row since the previous
/// login, so a Vault that keeps answering badly is not hammered.
#[derive(Default)]
struct Pace {
    failures: u32,
    last_login: Option<Instant>,
}

/// The tokens in the renewer's hands, revoked on shutdown when
/// `VAULT_REVOKE_ON_SHUTDOWN` asks, whatever step the signal interrupted:
/// the one it keeps alive, one found in the file and being checked, and
/// one a login just returned that is not yet written.
#[derive(Default)]
struct Hand {
    held: Option<Secret>,
    checking: Option<Secret>,
    fresh: Option<Secret>,
}

/// What the renewer carries from step to step besides the held token.
#[derive(Default)]
struct State {
    pace: Pace,
    hand: Hand,
    /// Events on the pod (docs/events.md): failed renewals and logins.
    events: Recorder,
    /// A handed-over token Vault could not check yet (it answered neither
    /// yes nor 400/401/403): when to look it up again, and how many times
    /// it failed so far.
    recheck: Option<(Instant, u32)>,
}

pub fn run(cfg: &RenewerConfig) -> Result<()> {
    let shutdown = Shutdown::install()?;
    if cfg.login.is_some() {
        // A re-login must be able to write its token: find out before the
        // first login, not after it.
        token_file::check_writable(&cfg.token_file)?;
    }
    for warning in &cfg.warnings {
        log::warn(warning);
    }
    let mut vault = VaultClient::new(&cfg.vault)?;
    if cfg.revoke_on_shutdown {
        // A token a login returns after the signal is revoked too.
        vault = vault.finish_logins_after_signal(LOGIN_ANSWER_WITHIN);
    }
    let mut watch = Watch::new(&cfg.token_file.path)?;
    // Dropped on every way out of `run`: the last failure's Event gets a
    // few seconds to be written before the exit.
    let mut st = State {
        events: Recorder::start(cfg.events.as_ref()),
        ..State::default()
    };
    let result = keep(cfg, &vault, &shutdown, &mut watch, &mut st);
    // A signal ends every step with `Interrupted`, whatever it was doing
    // (a renewal, a login, a lookup, a rate-limit wait): the revoke runs
    // here, once, for every token in hand.
    if matches!(result, Err(Error::Interrupted)) && cfg.revoke_on_shutdown {
        revoke(&vault, &st.hand);
    }
    result
}

/// `revoke-self` of every token in hand, within [`REVOKE_WITHIN`] in all.
fn revoke(vault: &VaultClient, hand: &Hand) {
    let until = Instant::now() + REVOKE_WITHIN;
    let held = hand.held.as_ref();
    let others = [
        (hand.checking.as_ref(), "the new token in the file"),
        (hand.fresh.as_ref(), "the token of the last login"),
    ];
    // Go's line word for word for the held token.
    let all = std::iter::once((held, "token")).chain(
        others
            .into_iter()
            .filter(|(t, _)| t.is_some() && *t != held),
    );
    for (token, what) in all {
        let Some(token) = token else { continue };
        match vault.revoke_self(token, until.saturating_duration_since(Instant::now())) {
            Ok(()) => log::info(format!("{what} revoked")),
            Err(e) => log::error(format!("failed to revoke {what}: {e}")),
        }
    }
}

/// Only Vault saying so makes a token invalid: a signal, a timeout, a 5xx,
/// a gateway's 404 or a broken answer says nothing about the token.
fn says_invalid(e: &Error) -> bool {
    matches!(e.status(), Some(400 | 401 | 403))
}

fn keep(
    cfg: &RenewerConfig,
    vault: &VaultClient,
    shutdown: &Shutdown,
    watch: &mut Watch,
    st: &mut State,
) -> Result<()> {
    let mut held = start(cfg, vault, st)?;
    // As the Go renewer: renew once at start (it logs `token renewed`),
    // so VAULT_TTL applies at once, then on the schedule.
    if held.extendable {
        held = act(cfg, vault, st, held)?;
    }
    log::info("start renewer loop");
    let mut last_call = Instant::now();
    loop {
        let due = st.recheck.map_or(held.next, |(at, _)| at.min(held.next));
        let wake = wait(shutdown, watch, due.max(last_call + FLOOR))?;
        let recheck_due = st.recheck.is_some_and(|(at, _)| at <= Instant::now());
        held = match wake {
            Wake::Signal => return Err(Error::Interrupted),
            Wake::FileChanged => take_file(cfg, vault, st, held)?,
            Wake::Timer if recheck_due => take_file(cfg, vault, st, held)?,
            Wake::Timer => act(cfg, vault, st, held)?,
        };
        last_call = Instant::now();
    }
}

/// The token file changed (or a handed-over token is due for another
/// look): keep the held token, load the new one, or log in again.
fn take_file(cfg: &RenewerConfig, vault: &VaultClient, st: &mut State, held: Held) -> Result<Held> {
    let path = &cfg.token_file.path;
    let token = match token_file::read(path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            st.recheck = None;
            let why = format!("token file {} was removed", path.display());
            return replace(cfg, vault, st, &why, true);
        }
        // A FIFO, a link, a device, an oversized file or bytes no token
        // has: what a writer gone wrong (or a hostile co-container) left.
        Err(e) => {
            st.recheck = None;
            let why = format!("token file {} is not usable: {e}", path.display());
            return replace(cfg, vault, st, &why, true);
        }
    };
    if token == held.token {
        // Our own write, or a touch.
        st.recheck = None;
        st.hand.checking = None;
        return Ok(held);
    }
    st.hand.checking = Some(token.clone());
    match load(vault, token, cfg, lookup_deadline(&held)) {
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Ok(mut new) => {
            st.recheck = None;
            st.hand.checking = None;
            st.pace.failures = 0;
            log::info(format!(
                "token file changed - loaded the new token (ttl {}s)",
                new.expires
                    .saturating_duration_since(Instant::now())
                    .as_secs()
            ));
            // Renew at once: the writer may have handed over a token close
            // to expiry, and VAULT_TTL should apply.
            if new.extendable {
                new.next = Instant::now();
            }
            st.hand.held = Some(new.token.clone());
            Ok(new)
        }
        Err(e) if says_invalid(&e) => {
            st.recheck = None;
            st.hand.checking = None;
            let why = format!("new token in {} is not valid: {e}", path.display());
            replace(cfg, vault, st, &why, true)
        }
        // Vault did not say: the handed-over token may well be valid (with
        // other policies, and nobody else to revoke it), so it is neither
        // overwritten nor taken; the held one is kept alive meanwhile.
        Err(e) => {
            let failures = st.recheck.map_or(0, |(_, n)| n);
            let wait = backoff(failures);
            log::warn(format!(
                "cannot check the new token in {} yet, keeping the current one and trying again in {:.1}s: {e}",
                path.display(),
                wait.as_secs_f64()
            ));
            st.recheck = Some((instant_after(Instant::now(), wait), failures + 1));
            Ok(held)
        }
    }
}

/// Loads the token from the file, or logs in when it is missing, unusable
/// or invalid and `VAULT_REAUTH` is set. While Vault cannot be reached (or
/// answers neither yes nor 400/401/403) the lookup is tried again with
/// [`backoff`], each wait logged, for as long as it takes: the token may
/// be valid for hours, and only Vault can say it is not.
fn start(cfg: &RenewerConfig, vault: &VaultClient, st: &mut State) -> Result<Held> {
    let path = &cfg.token_file.path;
    let problem = match token_file::read(path) {
        Ok(Some(token)) => {
            st.hand.checking = Some(token.clone());
            match wait_for_lookup(vault, token, cfg) {
                Ok(held) => {
                    st.hand.checking = None;
                    st.hand.held = Some(held.token.clone());
                    return Ok(held);
                }
                Err(e) if says_invalid(&e) => {
                    st.hand.checking = None;
                    format!("token in {} is not valid: {e}", path.display())
                }
                Err(e) => return Err(e.context("failed to look up the token")),
            }
        }
        Ok(None) => format!("no token in {}", path.display()),
        Err(e) => format!("token file {} is not usable: {e}", path.display()),
    };
    replace(cfg, vault, st, &problem, false)
}

/// [`load`], again and again while the failure is transient.
fn wait_for_lookup(vault: &VaultClient, token: Secret, cfg: &RenewerConfig) -> Result<Held> {
    let mut attempt = 0;
    loop {
        match load(vault, token.clone(), cfg, None) {
            Err(e) if e.is_transient() => {
                let wait = backoff(attempt);
                attempt += 1;
                log::warn(format!(
                    "cannot look up the token in {} yet, retrying in {:.1}s: {e}",
                    cfg.token_file.path.display(),
                    wait.as_secs_f64()
                ));
                if crate::signals::sleep(wait) {
                    return Err(Error::Interrupted);
                }
            }
            other => return other,
        }
    }
}

/// `lookup-self` (ending by `deadline`, if given) and the schedule for a
/// token found in the file.
fn load(
    vault: &VaultClient,
    token: Secret,
    cfg: &RenewerConfig,
    deadline: Option<Instant>,
) -> Result<Held> {
    let info = vault.lookup_self(&token, deadline)?;
    let period = info.period.filter(|p| *p > 0);
    // A root-like token without expiry: nothing to do but watch the file.
    let never_expires =
        info.ttl == 0 && info.explicit_max_ttl == 0 && period.is_none() && info.creation_ttl == 0;
    let natural = Duration::from_secs(period.unwrap_or(info.creation_ttl));
    Ok(Held::new(
        token,
        Duration::from_secs(info.ttl),
        info.renewable,
        never_expires,
        natural,
        cfg,
    ))
}

impl Held {
    /// `ttl` left now; `natural` the TTL a renewal gives without VAULT_TTL
    /// (the period, else the token's creation TTL).
    fn new(
        token: Secret,
        ttl: Duration,
        renewable: bool,
        never_expires: bool,
        natural: Duration,
        cfg: &RenewerConfig,
    ) -> Held {
        let now = Instant::now();
        let (extendable, reason) = match (never_expires, renewable) {
            (true, _) => (false, "never expires"),
            (false, true) => (true, ""),
            (false, false) => (false, "the token is not renewable"),
        };
        let mut held = Held {
            token,
            expires: instant_after(now, ttl),
            lease: ttl,
            extendable,
            reason,
            wanted: if cfg.ttl > Duration::ZERO {
                cfg.ttl
            } else {
                natural
            },
            longest: ttl.max(natural),
            failures: 0,
            next: now,
        };
        if never_expires {
            held.next = instant_after(now, Duration::from_secs(365 * 24 * 3600));
        } else {
            held.schedule();
        }
        held
    }
}

/// When calls about the held token must be over: its expiry less a margin
/// (a tenth of the lease, at most 500 ms), so the answer, or the decision
/// to log in again or exit, comes while the token is still valid.
fn renew_deadline(held: &Held) -> Instant {
    let margin = (held.lease / 10).min(Duration::from_millis(500));
    held.expires.checked_sub(margin).unwrap_or(held.expires)
}

/// The bound of a lookup made while `held` is kept: its renewal deadline
/// while that is still ahead (a stalled lookup must not cost the held token
/// its renewal), none for a token that never expires or already expired.
fn lookup_deadline(held: &Held) -> Option<Instant> {
    let deadline = renew_deadline(held);
    (!held.lease.is_zero() && deadline > Instant::now() + Duration::from_secs(1))
        .then_some(deadline)
}

/// When this renewal try must end: half the time left before
/// [`renew_deadline`], so a stalled Vault leaves room for more tries, each
/// shorter, before the token expires; but at least 1 s, since Vault gives
/// TTLs rounded down to whole seconds (a token said to have 0 s may have
/// 0.9 s) and a renewal it receives in time succeeds.
fn try_deadline(held: &Held, timeout: Duration) -> Instant {
    let now = Instant::now();
    let left = renew_deadline(held).saturating_duration_since(now);
    now + (left / 2).max(Duration::from_secs(1)).min(timeout)
}

/// The timer fired: renew, or replace a token that cannot be extended.
fn act(cfg: &RenewerConfig, vault: &VaultClient, st: &mut State, mut held: Held) -> Result<Held> {
    if !held.extendable {
        let left = held.expires.saturating_duration_since(Instant::now());
        let why = format!("{} (it expires in {:.1}s)", held.reason, left.as_secs_f64());
        return replace(cfg, vault, st, &why, false);
    }
    let result = vault.renew_self(&held.token, cfg.ttl, try_deadline(&held, cfg.vault.timeout));
    match result {
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Ok(auth) => {
            let lease = auth.lease_duration;
            held.expires = instant_after(Instant::now(), lease);
            held.lease = lease;
            held.longest = held.longest.max(lease);
            held.failures = 0;
            st.pace.failures = 0;
            // Capped by max TTL: Vault said so, or gave less than asked.
            let capped = auth
                .warnings
                .iter()
                .any(|w| w.contains("max_ttl") || w.contains("capped"))
                || (held.wanted > Duration::ZERO
                    && lease.saturating_add(Duration::from_secs(1)) < held.wanted);
            if !auth.renewable {
                held.extendable = false;
                held.reason = "the token is no longer renewable";
            } else if capped {
                held.extendable = false;
                held.reason = "the token reached its max TTL";
            }
            // Go's line word for word (users match on it); the lease on its own line.
            log::info("token renewed");
            log::info(format!("token ttl {}s", lease.as_secs()));
            if !held.extendable && cfg.login.is_none() {
                // Exit while the token is still valid, so the restart is
                // visible. Vault gives the lease in whole seconds, rounded
                // up as well as down: keep one more second of margin.
                let grace = (held.grace() + Duration::from_secs(1)).min(lease);
                held.next = held.expires.checked_sub(grace).unwrap_or_else(Instant::now);
                return Ok(held);
            }
            held.schedule();
            Ok(held)
        }
        // Anything but Vault's 400/401/403 says nothing about the token:
        // try again while it lives.
        Err(e) if !says_invalid(&e) => {
            held.failures += 1;
            // Keep trying while the token lives, closer together as its
            // expiry nears, never past it.
            let left = held.expires.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(500) {
                let why = format!("renewal kept failing until the token expired: {e}");
                st.events.report(Reason::RenewalFailed, log::one_line(&why));
                return replace(cfg, vault, st, &why, true);
            }
            let retry_at = instant_after(Instant::now(), backoff(held.failures).min(left / 2));
            let why = format!("failed to renew token, retrying: {e}");
            log::warn(&why);
            st.events.report(Reason::RenewalFailed, log::one_line(&why));
            held.next = retry_at;
            Ok(held)
        }
        Err(e) => {
            let why = format!("failed to renew token: {e}");
            st.events.report(Reason::RenewalFailed, log::one_line(&why));
            replace(cfg, vault, st, &why, true)
        }
    }
}

/// Replaces the token by logging in again (`VAULT_REAUTH=true`), or fails
/// with the reason. After a failure (`after_failure`), the login waits
/// until [`backoff`] of the failures in a row has passed since the last one.
fn replace(
    cfg: &RenewerConfig,
    vault: &VaultClient,
    st: &mut State,
    why: &str,
    after_failure: bool,
) -> Result<Held> {
    let Some(login) = &cfg.login else {
        return Err(Error::Other(format!(
            "{why}; VAULT_REAUTH is not set, exiting so the pod restarts"
        )));
    };
    let pace = &mut st.pace;
    if after_failure {
        if let Some(last) = pace.last_login {
            let wait = (last + backoff(pace.failures)).saturating_duration_since(Instant::now());
            if crate::signals::sleep(wait) {
                return Err(Error::Interrupted);
            }
        }
        pace.failures += 1;
    }
    if crate::signals::received() {
        return Err(Error::Interrupted);
    }
    log::info(format!("re-authenticating: {why}"));
    pace.last_login = Some(Instant::now());
    let auth = vault
        .login_until(
            login,
            Retry::Until(instant_after(Instant::now(), login.timeout)),
        )
        .map_err(|e| e.context("re-authentication failed"));
    let auth = match auth {
        Ok(auth) => auth,
        Err(e) => {
            if !matches!(e, Error::Interrupted) {
                // The program's final error line, also as Event.
                st.events.report(
                    Reason::ReauthenticationFailed,
                    log::one_line(&e.to_string()),
                );
            }
            return Err(e);
        }
    };
    // In hand from now on: a signal before it is written still revokes it.
    st.hand.fresh = Some(auth.client_token.clone());
    token_file::write(&cfg.token_file, &auth.client_token)?;
    st.hand.held = st.hand.fresh.take();
    log::info(format!(
        "successfully authenticated to vault, token stored at {}",
        cfg.token_file.path.display()
    ));
    st.events.report(
        Reason::Reauthenticated,
        log::one_line(&format!("logged in again: {why}")),
    );
    // The login answer has what lookup-self would: no second call. A fresh
    // token's lease is its natural TTL (the period for periodic tokens).
    let lease = auth.lease_duration;
    Ok(Held::new(
        auth.client_token,
        lease,
        auth.renewable,
        false,
        lease,
        cfg,
    ))
}

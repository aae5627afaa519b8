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

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};
use nix::poll::{poll, PollFd, PollFlags};

use crate::config::{RenewerConfig, Secret};
use crate::error::{Error, Result};
use crate::http::{backoff, random_unit, Retry};
use crate::signals::{poll_timeout, Shutdown};
use crate::vault::VaultClient;
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
    /// Transient failures in a row.
    failures: u32,
    /// Next action.
    next: Instant,
}

impl Held {
    /// 10–20% of the full lease (not of a lease shortened by max TTL, so a
    /// last short lease still leaves time to log in again or to exit).
    fn grace(&self) -> Duration {
        self.lease
            .max(self.wanted)
            .mul_f64(0.1 + 0.1 * random_unit())
    }

    fn schedule(&mut self) {
        let now = Instant::now();
        let remaining = self.expires.saturating_duration_since(now);
        let grace = self.grace();
        let sleep = remaining.mul_f64(2.0 / 3.0) + grace / 3;
        self.next = now + sleep.min(remaining.saturating_sub(grace));
    }
}

enum Wake {
    Timer,
    Signal,
    FileChanged,
}

pub fn run(cfg: &RenewerConfig) -> Result<()> {
    let vault = VaultClient::new(&cfg.vault)?;
    let shutdown = Shutdown::install()?;
    let mut watch = Watch::new(&cfg.token_file.path)?;
    let mut held = start(cfg, &vault)?;
    log::info("start renewer loop");
    loop {
        let wake = wait(&shutdown, &mut watch, held.next)?;
        match wake {
            Wake::Signal => {
                if cfg.revoke_on_shutdown {
                    match vault.revoke_self(&held.token) {
                        Ok(()) => log::info("token revoked"),
                        Err(e) => log::error(format!("failed to revoke token: {e}")),
                    }
                }
                log::info("signal received - stop execution");
                return Ok(());
            }
            Wake::FileChanged => match token_file::read(&cfg.token_file.path)? {
                Some(t) if t == held.token => {} // our own write, or a touch
                Some(t) => match load(&vault, t, cfg) {
                    Ok(mut new) => {
                        log::info(format!(
                            "token file changed - loaded the new token (ttl {}s)",
                            new.expires
                                .saturating_duration_since(Instant::now())
                                .as_secs()
                        ));
                        // Renew at once: the writer may have handed over a
                        // token close to expiry, and VAULT_TTL should apply.
                        if new.extendable {
                            new.next = Instant::now();
                        }
                        held = new;
                    }
                    Err(e) => {
                        held = replace(
                            cfg,
                            &vault,
                            &format!(
                                "new token in {} is not usable: {e}",
                                cfg.token_file.path.display()
                            ),
                        )?;
                    }
                },
                None => {
                    held = replace(
                        cfg,
                        &vault,
                        &format!("token file {} was removed", cfg.token_file.path.display()),
                    )?;
                }
            },
            Wake::Timer => held = act(cfg, &vault, held)?,
        }
    }
}

/// Loads the token from the file, or logs in when it is missing or invalid
/// and `VAULT_REAUTH` is set.
fn start(cfg: &RenewerConfig, vault: &VaultClient) -> Result<Held> {
    let path = &cfg.token_file.path;
    let problem = match token_file::read(path)? {
        Some(token) => match load(vault, token, cfg) {
            Ok(held) => return Ok(held),
            Err(e) if e.is_transient() => return Err(e.context("failed to look up the token")),
            Err(e) => format!("token in {} is not valid: {e}", path.display()),
        },
        None => format!("no token in {}", path.display()),
    };
    replace(cfg, vault, &problem)
}

/// `lookup-self` and the schedule for a token found in the file.
fn load(vault: &VaultClient, token: Secret, cfg: &RenewerConfig) -> Result<Held> {
    let info = vault.lookup_self(&token)?;
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
            expires: now + ttl,
            lease: ttl,
            extendable,
            reason,
            wanted: if cfg.ttl > Duration::ZERO {
                cfg.ttl
            } else {
                natural
            },
            failures: 0,
            next: now,
        };
        if never_expires {
            held.next = now + Duration::from_secs(365 * 24 * 3600);
        } else {
            held.schedule();
        }
        held
    }
}

/// The timer fired: renew, or replace a token that cannot be extended.
fn act(cfg: &RenewerConfig, vault: &VaultClient, mut held: Held) -> Result<Held> {
    if !held.extendable {
        let left = held.expires.saturating_duration_since(Instant::now());
        return replace(
            cfg,
            vault,
            &format!("{} (it expires in {:.1}s)", held.reason, left.as_secs_f64()),
        );
    }
    match vault.renew_self(&held.token, cfg.ttl) {
        Ok(auth) => {
            let lease = auth.lease_duration;
            held.expires = Instant::now() + lease;
            held.lease = lease;
            held.failures = 0;
            // Capped by max TTL: Vault said so, or gave less than asked.
            let capped = auth
                .warnings
                .iter()
                .any(|w| w.contains("max_ttl") || w.contains("capped"))
                || (held.wanted > Duration::ZERO && lease + Duration::from_secs(1) < held.wanted);
            if !auth.renewable {
                held.extendable = false;
                held.reason = "the token is no longer renewable";
            } else if capped {
                held.extendable = false;
                held.reason = "the token reached its max TTL";
            }
            log::info(format!("token renewed (ttl {}s)", lease.as_secs()));
            if !held.extendable && cfg.login.is_none() {
                // Exit while the token is still valid, so the restart is visible.
                let grace = held.grace().min(lease);
                held.next = held.expires - grace;
                return Ok(held);
            }
            held.schedule();
            Ok(held)
        }
        Err(e) if e.is_transient() => {
            held.failures += 1;
            // Keep trying while the token lives, closer together as its
            // expiry nears, never past it.
            let left = held.expires.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(500) {
                return replace(
                    cfg,
                    vault,
                    &format!("renewal kept failing until the token expired: {e}"),
                );
            }
            let retry_at = Instant::now() + backoff(held.failures).min(left / 2);
            log::warn(format!("failed to renew token, retrying: {e}"));
            held.next = retry_at;
            Ok(held)
        }
        Err(e) => replace(cfg, vault, &format!("failed to renew token: {e}")),
    }
}

/// Replaces the token by logging in again (`VAULT_REAUTH=true`), or fails
/// with the reason.
fn replace(cfg: &RenewerConfig, vault: &VaultClient, why: &str) -> Result<Held> {
    let Some(login) = &cfg.login else {
        return Err(Error::Other(format!(
            "{why}; VAULT_REAUTH is not set, exiting so the pod restarts"
        )));
    };
    log::info(format!("re-authenticating: {why}"));
    let auth = vault
        .login_until(login, Retry::Until(Instant::now() + login.timeout))
        .map_err(|e| e.context("re-authentication failed"))?;
    token_file::write(&cfg.token_file, &auth.client_token)?;
    log::info(format!(
        "successfully authenticated to vault, token stored at {}",
        cfg.token_file.path.display()
    ));
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

/// inotify on the token file's directory, filtered on the file's name.
struct Watch {
    inotify: Inotify,
    name: OsString,
}

impl Watch {
    fn new(path: &std::path::Path) -> Result<Self> {
        let dir = token_file::directory(path);
        let inotify = Inotify::init().map_err(|e| Error::io("inotify init", e))?;
        inotify
            .watches()
            .add(
                dir,
                WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM,
            )
            .map_err(|e| Error::io(format!("watch directory {}", dir.display()), e))?;
        Ok(Watch {
            inotify,
            name: path.file_name().unwrap_or_default().to_os_string(),
        })
    }

    /// Drains pending events; true if one was about the token file.
    fn drain(&mut self) -> Result<bool> {
        let mut buf = [0u8; 4096];
        let mut hit = false;
        loop {
            match self.inotify.read_events(&mut buf) {
                Ok(events) => {
                    let mut any = false;
                    for ev in events {
                        any = true;
                        hit |= ev.name.is_some_and(|n| n == self.name.as_os_str());
                    }
                    if !any {
                        return Ok(hit);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(hit),
                Err(e) => return Err(Error::io("read inotify events", e)),
            }
        }
    }
}

fn wait(shutdown: &Shutdown, watch: &mut Watch, until: Instant) -> Result<Wake> {
    loop {
        let timeout = until.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return Ok(Wake::Timer);
        }
        let mut fds = [
            PollFd::new(shutdown.fd(), PollFlags::POLLIN),
            PollFd::new(watch.inotify.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, poll_timeout(timeout)) {
            Ok(0) => return Ok(Wake::Timer),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Other(format!("poll: {e}"))),
        }
        let sig = fds[0].revents().is_some_and(|r| !r.is_empty());
        let file = fds[1].revents().is_some_and(|r| !r.is_empty());
        if sig && shutdown.received() {
            return Ok(Wake::Signal);
        }
        if file && watch.drain()? {
            // A writer that removes and recreates makes several events:
            // let it finish before reading the file.
            if shutdown.sleep(Duration::from_millis(50)) {
                return Ok(Wake::Signal);
            }
            watch.drain()?;
            return Ok(Wake::FileChanged);
        }
    }
}

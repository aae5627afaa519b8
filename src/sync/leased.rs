//! Leased entries of the mapping (`creds:` and `cert:` in `VAULT_SECRETS`):
//! credentials from a dynamic secrets engine (the database engine's
//! `<mount>/creds/<role>`) and certificates from the PKI engine
//! (`<mount>/issue/<role>`), kept valid between the plan's runs.
//!
//! Each entry holds what it delivered and its lease, with one timer: the
//! sidecar sleeps until the earliest one (or the token file changes), never
//! polling. The timing rules (docs/leased-secrets.md):
//! - credentials: renew at 2/3 of the lease (minus up to 10% of it, so
//!   replicas spread); when a renewal is capped by the max TTL (or the lease
//!   is not renewable), obtain new credentials when a third of a full lease
//!   is left, so the application has that long to switch; the old lease
//!   ends by itself (or is revoked on shutdown when asked);
//! - certificates: re-issue at 2/3 of the certificate's validity (plus up to
//!   1/15 of it), read from the certificate itself, as cert-manager does. In
//!   the Secrets sink the Secret is read first: a certificate another
//!   replica (or an earlier run) delivered for the same request and not yet
//!   due is kept, not re-issued; a due one is claimed first (an annotation
//!   written over the version read), so of replicas due at once only one
//!   re-issues;
//! - a new token in the token file (the renewer logged in again): the
//!   leases of the old token end with it, so new credentials and
//!   certificates (those with a lease) are obtained at once.
//!
//! A failure (Vault down, a role gone) stops only that entry: what was
//! delivered stays as it is, and the entry is tried again after a backoff.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use super::plan::{checksum, to_secret_data, Desired, Plan};
use crate::error::{Error, Result};
use crate::events::Reason;
use crate::http::backoff;
use crate::log;
use crate::mapping::{CertRequest, Entry, Kind, Target};
use crate::random::random_unit;
use crate::secret::Secret;
use crate::time::instant_after;
use crate::vault::{Leased, VaultClient};
use crate::x509::{self, Validity};

type Data = BTreeMap<String, Vec<u8>>;

/// Annotation of a shared certificate Secret while one replica re-issues
/// it: until when (seconds since the epoch) the others leave it alone.
pub const CLAIM_ANNOTATION: &str = "vault-kubernetes/reissuing";

/// A certificate Secret as read from the Secrets sink.
pub struct Shared {
    /// The Vault path and parameters its annotation records.
    pub path: String,
    pub data: Data,
    /// An unexpired [`CLAIM_ANNOTATION`] of another replica.
    pub claimed_until: Option<SystemTime>,
    /// The Secret as read: a claim is written only over this very version.
    pub secret: Value,
}

/// What the sink shares between replicas. Only the Secrets sink shares
/// (a Secret outlives the pod); files are the pod's own: [`Unshared`].
pub trait Shelf {
    /// The Secret `name`, if it is the synchronizer's and readable.
    fn read(&self, name: &str) -> Result<Option<Shared>>;
    /// Writes [`CLAIM_ANNOTATION`] = `until` if the Secret is unchanged
    /// since it was read; false when another wrote first (HTTP 409).
    fn claim(&self, shared: &Shared, until: SystemTime) -> Result<bool>;
}

/// The file sink: nothing shared.
pub struct Unshared;

impl Shelf for Unshared {
    fn read(&self, _: &str) -> Result<Option<Shared>> {
        Ok(None)
    }
    fn claim(&self, _: &Shared, _: SystemTime) -> Result<bool> {
        Ok(true)
    }
}

/// How long a claim holds: the issue and the write take a second; a
/// replica that dies in between delays the others by this much at most.
const CLAIM_FOR: Duration = Duration::from_secs(20);
/// After losing a claim: when to read the Secret again.
const AFTER_LOST_CLAIM: Duration = Duration::from_secs(2);

/// Bound of revoke-on-shutdown for all leases together: the renewer's
/// bound too, well inside Kubernetes' 30 s grace period.
pub const REVOKE_WITHIN: Duration = Duration::from_secs(2);

/// The leased entries and what each holds.
pub struct Leases {
    entries: Vec<Slot>,
    /// What the pod's Events should say (docs/events.md), until taken.
    notices: Vec<(Reason, String)>,
    /// Data changed since the sinks last wrote it all: see [`Leases::unwritten`].
    unwritten: bool,
}

/// Notices kept for [`Leases::take_notices`]; older ones are dropped.
const NOTICES: usize = 32;

struct Slot {
    raw: String,
    name: String,
    /// The Vault path with the request's parameters: what the sinks record
    /// (annotation, manifest), so a changed request is never mistaken for
    /// the delivered one.
    vault_path: String,
    path: String,
    cert: Option<CertRequest>,
    held: Option<Held>,
    /// Earlier leases not yet expired: revoked on shutdown when asked.
    retired: Vec<(String, Instant)>,
    next: Instant,
    failures: u32,
    /// The log line of a certificate issued again, for its Event.
    reissued: Option<String>,
}

struct Held {
    data: Data,
    /// Empty without a lease (a PKI role without `generate_lease`, or a
    /// certificate found in a Secret).
    lease_id: String,
    /// Digest of the token that obtained it; `None` when found in a Secret.
    token: Option<String>,
    expires: Instant,
    /// The full lease Vault first gave (credentials): what each renewal asks.
    lease: Duration,
    /// A renewal can still extend it.
    extendable: bool,
}

/// What woke an entry, for its log line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    Start,
    Due,
    NewToken,
    /// Vault refused to renew the lease (revoked, expired, not ours).
    Refused,
}

impl Leases {
    pub fn new(entries: &[Entry]) -> Self {
        let now = Instant::now();
        let entries = entries
            .iter()
            .filter_map(|e| {
                let Target::Single { name } = &e.target else {
                    return None;
                };
                let cert = match &e.kind {
                    Kind::Kv => return None,
                    Kind::Creds => None,
                    Kind::Cert(req) => Some(req.clone()),
                };
                Some(Slot {
                    raw: e.raw.clone(),
                    name: name.clone(),
                    vault_path: e.vault_path(),
                    path: e.path.clone(),
                    cert,
                    held: None,
                    retired: Vec::new(),
                    next: now,
                    failures: 0,
                    reissued: None,
                })
            })
            .collect();
        Leases {
            entries,
            notices: Vec::new(),
            unwritten: false,
        }
    }

    /// Whether an entry obtained data the sinks have not written yet (the
    /// run that should have failed): the sidecar then tries the write again
    /// soon, not at the next `SYNC_INTERVAL`, since the delivered data may
    /// be ending.
    pub fn unwritten(&self) -> bool {
        self.unwritten
    }

    /// The sinks wrote what every entry holds.
    pub fn written(&mut self) {
        self.unwritten = false;
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest moment an entry has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.iter().map(|s| s.next).min()
    }

    /// Does what is due for every entry (renew, obtain, re-issue) with
    /// `token`; `delivered` reads what the sink holds for a name. Returns
    /// whether any entry's data changed (the sinks must write). Errors stop
    /// only their entry and are logged; only a signal ends the call.
    pub fn service(
        &mut self,
        vault: &VaultClient,
        token: &Secret,
        shelf: &dyn Shelf,
    ) -> Result<bool> {
        let digest = token_digest(token);
        let mut changed = false;
        for slot in &mut self.entries {
            let now = Instant::now();
            slot.retired.retain(|(_, until)| *until > now);
            let why = match &slot.held {
                None => Why::Start,
                Some(h)
                    if !h.lease_id.is_empty() && h.token.as_ref().is_some_and(|t| *t != digest) =>
                {
                    Why::NewToken
                }
                Some(_) if now >= slot.next => Why::Due,
                Some(_) => continue,
            };
            if why == Why::Start && now < slot.next {
                continue; // waiting out a backoff
            }
            match slot.act(vault, token, &digest, why, shelf) {
                Ok(c) => {
                    slot.failures = 0;
                    changed |= c;
                    if let Some(line) = slot.reissued.take() {
                        self.notices.push((Reason::CertificateReissued, line));
                    }
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    slot.failures = slot.failures.saturating_add(1);
                    let mut wait = backoff(slot.failures);
                    // Credentials still valid: retry well before they end.
                    if let Some(h) = &slot.held {
                        let left = h.expires.saturating_duration_since(now);
                        if !left.is_zero() {
                            wait = wait.min(left / 3).max(Duration::from_secs(1));
                        }
                    }
                    slot.next = instant_after(Instant::now(), wait);
                    let line = format!(
                        "entry {:?}: {e}; {} as it is, trying again in {:.1}s",
                        slot.raw,
                        if slot.held.is_some() {
                            "keeping what was delivered"
                        } else {
                            "nothing delivered, keeping the target"
                        },
                        wait.as_secs_f64()
                    );
                    log::error(&line);
                    self.notices.push((Reason::LeaseRenewalFailed, line));
                }
            }
        }
        self.unwritten |= changed;
        Ok(changed)
    }

    /// What happened since the last call that the pod's Events should
    /// show: leased entries that failed ([`Reason::LeaseRenewalFailed`],
    /// the log line as note) and certificates issued again
    /// ([`Reason::CertificateReissued`]). At most the last [`NOTICES`].
    pub fn take_notices(&mut self) -> Vec<(Reason, String)> {
        let n = self.notices.len();
        self.notices.drain(..n.saturating_sub(NOTICES));
        std::mem::take(&mut self.notices)
    }

    /// Adds what each entry holds to the plan; an entry that holds nothing
    /// (its first try failed) keeps whatever the sink has under its name.
    pub fn extend_plan(&self, plan: &mut Plan) {
        for slot in &self.entries {
            match &slot.held {
                Some(h) => plan.secrets.push(Desired {
                    name: slot.name.clone(),
                    vault_path: slot.vault_path.clone(),
                    checksum: checksum(&h.data),
                    data: h.data.clone(),
                    secret_type: if slot.cert.is_some() {
                        "kubernetes.io/tls"
                    } else {
                        "Opaque"
                    },
                }),
                None => plan.not_found.push(slot.name.clone()),
            }
        }
    }

    /// Whether every entry holds something (an init container's run
    /// succeeded only then).
    pub fn all_held(&self) -> std::result::Result<(), String> {
        let missing: Vec<&str> = self
            .entries
            .iter()
            .filter(|s| s.held.is_none())
            .map(|s| s.raw.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("nothing obtained for {}", missing.join(", ")))
        }
    }

    /// Revokes every lease held or retired, in parallel, all within
    /// `within`, even after a signal. Failures are logged: the leases then
    /// end with their TTL or with the token.
    pub fn revoke_all(&self, vault: &VaultClient, token: &Secret, within: Duration) {
        let mut ids: Vec<(&str, &str)> = Vec::new();
        for slot in &self.entries {
            if let Some(h) = &slot.held {
                if !h.lease_id.is_empty() {
                    ids.push((&slot.raw, &h.lease_id));
                }
            }
            ids.extend(
                slot.retired
                    .iter()
                    .map(|(id, _)| (slot.raw.as_str(), id.as_str())),
            );
        }
        let results =
            crate::parallel::parallel(&ids, |(_, id)| vault.revoke_lease(token, id, within));
        for ((raw, _), result) in ids.iter().zip(results) {
            match result {
                Ok(()) => log::info(format!("entry {raw:?}: lease revoked")),
                Err(e) => log::warn(format!(
                    "entry {raw:?}: cannot revoke the lease ({e}); it ends with its TTL or its token"
                )),
            }
        }
    }

    /// One line per entry at start, naming it and what it delivers.
    pub fn describe(&self, sidecar: bool) {
        for slot in &self.entries {
            let what = match &slot.cert {
                Some(req) => format!(
                    "certificate for {} from {} as {} (tls.crt, tls.key, ca.crt), re-issued at 2/3 of its lifetime",
                    req.common_name, slot.path, slot.name
                ),
                None => format!(
                    "credentials from {} as {} (one file or key per field), renewed at 2/3 of the lease",
                    slot.path, slot.name
                ),
            };
            log::info(format!("leased entry {:?}: {what}", slot.raw));
            if !sidecar {
                log::warn(format!(
                    "leased entry {:?}: no SYNC_INTERVAL, so nothing renews or replaces it after this run: \
                     it stops working when its lease or certificate ends (or its token is revoked); \
                     run the synchronizer as a sidecar to keep it valid",
                    slot.raw
                ));
            }
        }
    }
}

impl Slot {
    /// Does this entry's due action; true if its data changed.
    fn act(
        &mut self,
        vault: &VaultClient,
        token: &Secret,
        digest: &str,
        why: Why,
        shelf: &dyn Shelf,
    ) -> Result<bool> {
        if self.cert.is_some() {
            if why != Why::NewToken {
                if let Some(kept) = self.shared_certificate(shelf)? {
                    return Ok(kept);
                }
            }
            return self.issue(vault, token, digest, why);
        }
        match &self.held {
            Some(h) if why == Why::Due && h.extendable && !h.lease_id.is_empty() => {
                match self.renew(vault, token) {
                    Ok(()) => Ok(false),
                    // The lease is gone (revoked, expired, not ours): new ones.
                    Err(e) if matches!(e.status(), Some(400 | 403 | 404)) => {
                        log::warn(format!(
                            "entry {:?}: renewal refused ({e}); obtaining new credentials",
                            self.raw
                        ));
                        self.obtain(vault, token, digest, Why::Refused)
                    }
                    Err(e) => Err(e.context("renew the lease")),
                }
            }
            _ => self.obtain(vault, token, digest, why),
        }
    }

    fn renew(&mut self, vault: &VaultClient, token: &Secret) -> Result<()> {
        let h = self.held.as_mut().expect("renew holds a lease");
        let now = Instant::now();
        let r = vault.renew_lease(
            token,
            &h.lease_id,
            h.lease,
            h.expires.max(instant_after(now, Duration::from_secs(1))),
        )?;
        h.expires = instant_after(now, r.lease_duration);
        // Capped by the max TTL (a second of rounding allowed), or no
        // longer renewable: this is the lease's last stretch.
        if !r.renewable || r.lease_duration + Duration::from_secs(1) < h.lease {
            h.extendable = false;
        }
        self.next = schedule(now, h);
        log::info(format!(
            "entry {:?}: lease renewed for {}s{}",
            self.raw,
            r.lease_duration.as_secs(),
            if h.extendable {
                ""
            } else {
                " (its max TTL): new credentials before it ends"
            }
        ));
        Ok(())
    }

    fn obtain(
        &mut self,
        vault: &VaultClient,
        token: &Secret,
        digest: &str,
        why: Why,
    ) -> Result<bool> {
        let leased = vault.read_leased(token, &self.path)?;
        let data = to_secret_data(&leased.data).map_err(Error::Other)?;
        self.replace(leased, data, digest, None, why)
    }

    fn issue(
        &mut self,
        vault: &VaultClient,
        token: &Secret,
        digest: &str,
        why: Why,
    ) -> Result<bool> {
        let req = self.cert.as_ref().expect("a certificate entry");
        let leased = vault.issue_certificate(token, &self.path, &req.params())?;
        let data = certificate_files(&leased.data)?;
        let validity = x509::validity(&data["tls.crt"]).ok_or_else(|| Error::Decode {
            context: format!("issue {}", self.path),
            reason: "the certificate does not parse".into(),
        })?;
        self.replace(leased, data, digest, Some(validity), why)
    }

    /// Takes new data and its lease; the old lease is retired.
    fn replace(
        &mut self,
        leased: Leased,
        data: Data,
        digest: &str,
        cert: Option<Validity>,
        why: Why,
    ) -> Result<bool> {
        let now = Instant::now();
        let (expires, next) = match cert {
            Some(v) => (instant_of(v.not_after, now), reissue_at(&v, now)),
            None if leased.lease_duration.is_zero() => {
                // No lease: nothing to renew, nothing ends.
                (
                    instant_after(now, Duration::MAX),
                    instant_after(now, Duration::MAX),
                )
            }
            None => {
                let expires = instant_after(now, leased.lease_duration);
                (expires, now) // set below
            }
        };
        if let Some(old) = self.held.take() {
            if !old.lease_id.is_empty() && old.expires > now {
                self.retired.push((old.lease_id, old.expires));
            }
        }
        let held = Held {
            data,
            lease_id: leased.lease_id,
            token: Some(digest.to_string()),
            expires,
            lease: leased.lease_duration,
            extendable: leased.renewable,
        };
        self.next = if cert.is_none() && !held.lease.is_zero() {
            schedule(now, &held)
        } else {
            next
        };
        let reason = match why {
            Why::Start => "",
            Why::Due => {
                if cert.is_some() {
                    " (2/3 of the previous one's lifetime)"
                } else {
                    " (the lease reached its max TTL)"
                }
            }
            Why::NewToken => " (new token: the old one's leases end with it)",
            Why::Refused => " (the renewal was refused)",
        };
        match cert {
            Some(v) => {
                let line = format!(
                    "entry {:?}: certificate issued{reason}, valid until {}, re-issued after {}",
                    self.raw,
                    utc(v.not_after),
                    utc(SystemTime::now() + self.next.saturating_duration_since(now)),
                );
                log::info(&line);
                if why != Why::Start {
                    self.reissued = Some(line);
                }
            }
            None => log::info(format!(
                "entry {:?}: new credentials{reason}, lease {}s",
                self.raw,
                held.lease.as_secs()
            )),
        }
        self.held = Some(held);
        Ok(true)
    }

    /// The Secrets sink's certificate for this very request: kept while it
    /// is not due (another replica or an earlier run issued it); when due,
    /// left to a replica that claimed its re-issue, else claimed (over the
    /// version read, so of replicas due at once one wins). `Some(changed)`
    /// when nothing is to be issued now; `None` to issue.
    fn shared_certificate(&mut self, shelf: &dyn Shelf) -> Result<Option<bool>> {
        let Some(shared) = shelf.read(&self.name)? else {
            return Ok(None);
        };
        if shared.path != self.vault_path || !shared.data.contains_key("tls.key") {
            return Ok(None);
        }
        let Some(v) = shared.data.get("tls.crt").and_then(|c| x509::validity(c)) else {
            return Ok(None);
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        if wall >= v.at(2.0 / 3.0) {
            if let Some(until) = shared
                .claimed_until
                .filter(|u| *u > wall && *u < v.not_after)
            {
                log::info(format!(
                    "entry {:?}: another replica re-issues the certificate in secret {} (claimed until {})",
                    self.raw,
                    self.name,
                    utc(until)
                ));
                self.next = instant_of(until, now);
                return Ok(Some(false));
            }
            let left = v.not_after.duration_since(wall).unwrap_or(Duration::ZERO);
            if !shelf.claim(&shared, wall + CLAIM_FOR.min(left / 3))? {
                log::info(format!(
                    "entry {:?}: secret {} changed while due: another replica re-issues it",
                    self.raw, self.name
                ));
                self.next = instant_after(now, AFTER_LOST_CLAIM);
                return Ok(Some(false));
            }
            return Ok(None);
        }
        let changed = self.held.as_ref().is_none_or(|h| h.data != shared.data);
        if changed {
            log::info(format!(
                "entry {:?}: keeping the certificate in secret {} (valid until {}, not yet due)",
                self.raw,
                self.name,
                utc(v.not_after)
            ));
        }
        self.held = Some(Held {
            data: shared.data,
            lease_id: String::new(),
            token: None,
            expires: instant_of(v.not_after, now),
            lease: Duration::ZERO,
            extendable: false,
        });
        self.next = reissue_at(&v, now);
        Ok(Some(changed))
    }
}

/// Credentials' next action: at 2/3 of a full lease since now, less up to
/// 10% of it; for a lease in its last stretch, when a third of a full lease
/// is left (at once if less is).
fn schedule(now: Instant, h: &Held) -> Instant {
    let jitter = h.lease.mul_f64(0.1 * random_unit());
    let at = h.expires.checked_sub(h.lease / 3 + jitter).unwrap_or(now);
    at.max(now)
}

/// 2/3 of the certificate's validity plus up to 1/15 of it (never past
/// 11/15: a third of it is left for the application to reload). A
/// certificate that is due as soon as issued (a TTL of seconds under a
/// notBefore backdated by the PKI role's `not_before_duration`, 30 s by
/// default) is re-issued at 2/3 of what is left instead, and not before a
/// second: an entry never issues in a loop.
fn reissue_at(v: &Validity, now: Instant) -> Instant {
    let at = v.at(2.0 / 3.0 + random_unit() / 15.0);
    let wall = SystemTime::now();
    if at > wall {
        return instant_of(at, now);
    }
    let left = v.not_after.duration_since(wall).unwrap_or(Duration::ZERO);
    instant_after(now, left.mul_f64(2.0 / 3.0).max(Duration::from_secs(1)))
}

/// The `Instant` of a wall-clock time (now if past).
fn instant_of(t: SystemTime, now: Instant) -> Instant {
    instant_after(
        now,
        t.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `tls.crt` (the certificate, then the chain Vault gives), `tls.key`,
/// `ca.crt` (the top of the chain: the CA to verify against).
fn certificate_files(data: &Map<String, Value>) -> Result<Data> {
    let field = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let missing = |k: &str| Error::Decode {
        context: "certificate".into(),
        reason: format!("answer without {k}"),
    };
    let cert = field("certificate").ok_or_else(|| missing("certificate"))?;
    let key = field("private_key").ok_or_else(|| missing("private_key"))?;
    let chain: Vec<&str> = data
        .get("ca_chain")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ca = chain
        .last()
        .copied()
        .or_else(|| field("issuing_ca"))
        .ok_or_else(|| missing("issuing_ca"))?;
    let mut crt = String::new();
    for pem in std::iter::once(cert).chain(chain.iter().copied()) {
        crt.push_str(pem.trim_end());
        crt.push('\n');
    }
    Ok(BTreeMap::from([
        ("tls.crt".to_string(), crt.into_bytes()),
        (
            "tls.key".to_string(),
            format!("{}\n", key.trim_end()).into_bytes(),
        ),
        (
            "ca.crt".to_string(),
            format!("{}\n", ca.trim_end()).into_bytes(),
        ),
    ]))
}

/// A token's SHA-256, to tell tokens apart without keeping old ones.
fn token_digest(token: &Secret) -> String {
    let mut data = BTreeMap::new();
    data.insert(String::new(), token.expose().as_bytes().to_vec());
    checksum(&data)
}

/// `2026-12-01T01:23:18Z`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = log::civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_due_when_issued_is_not_reissued_in_a_loop() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        // 5 s asked, notBefore backdated 30 s: 2/3 of the validity is past.
        let v = Validity {
            not_before: wall - Duration::from_secs(30),
            not_after: wall + Duration::from_secs(5),
        };
        let at = reissue_at(&v, now).duration_since(now);
        assert!(
            at >= Duration::from_secs(1) && at <= Duration::from_secs(4),
            "{at:?}"
        );
        // An hour: at 2/3 of the validity, up to 1/15 of it later.
        let v = Validity {
            not_before: wall - Duration::from_secs(30),
            not_after: wall + Duration::from_secs(3600),
        };
        let at = reissue_at(&v, now).duration_since(now).as_secs_f64();
        let life = 3630.0;
        assert!(
            at >= life * 2.0 / 3.0 - 31.0 && at <= life * 11.0 / 15.0 - 29.0,
            "{at}"
        );
    }

    #[test]
    fn certificate_files_put_the_chain_after_the_certificate() {
        let data: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "certificate": "LEAF", "private_key": "KEY", "issuing_ca": "INT",
            "ca_chain": ["INT", "ROOT"],
        }))
        .unwrap();
        let files = certificate_files(&data).unwrap();
        assert_eq!(files["tls.crt"], b"LEAF\nINT\nROOT\n");
        assert_eq!(files["tls.key"], b"KEY\n");
        assert_eq!(files["ca.crt"], b"ROOT\n");
        let mut no_key = data.clone();
        no_key.remove("private_key");
        assert!(certificate_files(&no_key).is_err());
    }
}

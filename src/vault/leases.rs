//! Leased secrets: dynamic credentials read from a secrets engine (the
//! `database` engine's `<mount>/creds/<role>`, a GET that mints new
//! credentials each time), certificates from the PKI engine
//! (`<mount>/issue/<role>`, a POST that mints a new certificate each time),
//! and their leases: `sys/leases/renew` and `sys/leases/revoke`.
//!
//! A lease belongs to the token that created it: revoking or letting that
//! token expire revokes its leases too (Vault's lease hierarchy).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::token::check_ttl;
use super::{VaultClient, AUTH_LIMIT};
use crate::error::{Error, Result};
use crate::http::{Method, Request};
use crate::secret::Secret;
use crate::url::encode_path;

/// Answer limit of a mint: database credentials are about 1 KiB; a
/// certificate, its key and a chain of a few CAs some 10 KiB.
pub const LEASED_LIMIT: u64 = 256 * 1024;

/// What a mint returns: the secret's data and its lease.
#[derive(Debug)]
pub struct Leased {
    /// Empty when the engine gave none (a PKI role without `generate_lease`).
    pub lease_id: String,
    /// Zero when there is no lease.
    pub lease_duration: Duration,
    pub renewable: bool,
    pub data: Map<String, Value>,
}

/// A renewal's answer.
#[derive(Clone, Copy, Debug)]
pub struct Renewed {
    /// The lease from now on; may be less than asked when the max TTL caps it.
    pub lease_duration: Duration,
    pub renewable: bool,
}

#[derive(Deserialize)]
struct RawLeased {
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    data: Option<Map<String, Value>>,
}

impl VaultClient {
    /// Reads `path` (e.g. `database/creds/app`): new credentials each call.
    pub fn read_leased(&self, token: &Secret, path: &str) -> Result<Leased> {
        let url = format!("/v1/{}", encode_path(path));
        let resp = self.call(
            Request::new(Method::Get, &url)
                .header("X-Vault-Token", token.expose())
                .limit(LEASED_LIMIT)
                // A mint cut by SIGTERM leaves a lease nobody can revoke.
                .finish_after_signal(self.login_after_signal),
        )?;
        leased_of(resp.json(format!("read {path}"))?, path)
    }

    /// Issues a certificate at `path` (e.g. `pki/issue/app`) with `params`
    /// (`common_name`, `alt_names`, `ip_sans`, `ttl`): a new certificate
    /// and key each call.
    pub fn issue_certificate(&self, token: &Secret, path: &str, params: &Value) -> Result<Leased> {
        let url = format!("/v1/{}", encode_path(path));
        let resp = self.call(
            Request::new(Method::Post, &url)
                .header("X-Vault-Token", token.expose())
                .json(params)
                .limit(LEASED_LIMIT)
                .finish_after_signal(self.login_after_signal),
        )?;
        leased_of(resp.json(format!("issue {path}"))?, path)
    }

    /// `sys/leases/renew` with `increment`, one try ending by `deadline`
    /// (the lease's expiry): the caller schedules its own retries.
    pub fn renew_lease(
        &self,
        token: &Secret,
        lease_id: &str,
        increment: Duration,
        deadline: Instant,
    ) -> Result<Renewed> {
        let resp = self.http.once(
            &Request::new(Method::Put, "/v1/sys/leases/renew")
                .header("X-Vault-Token", token.expose())
                .json(&json!({ "lease_id": lease_id, "increment": increment.as_secs() }))
                .limit(AUTH_LIMIT)
                .deadline(deadline),
            self.timeout,
        )?;
        let raw: RawLeased = resp.json("lease renewal")?;
        let lease_duration =
            check_ttl("lease_duration", raw.lease_duration).map_err(|reason| Error::Invalid {
                context: "lease renewal".into(),
                reason,
            })?;
        Ok(Renewed {
            lease_duration,
            renewable: raw.renewable,
        })
    }

    /// `sys/leases/revoke`, one try within `within`, even after a signal
    /// (it is what the synchronizer does on SIGTERM).
    pub fn revoke_lease(&self, token: &Secret, lease_id: &str, within: Duration) -> Result<()> {
        self.http.once(
            &Request::new(Method::Put, "/v1/sys/leases/revoke")
                .header("X-Vault-Token", token.expose())
                .json(&json!({ "lease_id": lease_id }))
                .limit(AUTH_LIMIT)
                .uninterruptible(),
            within,
        )?;
        Ok(())
    }
}

fn leased_of(raw: RawLeased, path: &str) -> Result<Leased> {
    let invalid = |reason: String| Error::Invalid {
        context: format!("lease of {path}"),
        reason,
    };
    let lease_duration = check_ttl("lease_duration", raw.lease_duration).map_err(invalid)?;
    let data = raw.data.ok_or_else(|| Error::Decode {
        context: format!("read {path}"),
        reason: "response without data".into(),
    })?;
    Ok(Leased {
        lease_id: raw.lease_id,
        lease_duration,
        renewable: raw.renewable,
        data,
    })
}

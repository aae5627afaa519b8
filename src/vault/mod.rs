//! The Vault (and OpenBao) client the programs share: login (Kubernetes
//! and AppRole), token lookup, renewal and revocation ([`auth`]), KV reads
//! and lists on version 1 and 2 mounts ([`kv`]), leased secrets and their
//! leases ([`leases`]), and what a valid token is ([`token`]). Every request carries `X-Vault-Request: true` and, when
//! set, `X-Vault-Namespace`.

use std::time::Duration;

use serde::Deserialize;

use crate::config::VaultSettings;
use crate::error::Result;
use crate::http::{HttpClient, Method, Request, Response, Retry};
use crate::secret::Secret;

pub mod auth;
pub mod kv;
pub mod leases;
pub mod token;

pub use self::auth::{Auth, TokenInfo};
pub use self::kv::KvMount;
pub use self::leases::{Leased, Renewed};
pub use self::token::{check_token, MAX_TOKEN_LEN, MAX_TTL};

/// Answer limit of auth calls (login, lookup, renewal, revocation, mount
/// lookup): a login answer is about 1 KiB even with many policies and
/// metadata; 64 KiB leaves room and keeps a hostile answer harmless.
pub const AUTH_LIMIT: u64 = 64 * 1024;
/// Answer limit of a KV read. A Kubernetes Secret holds at most 1 MiB of
/// data; as `base64:` values that is 1.4 MB of JSON, plus keys and the KV
/// v2 envelope: a secret over 1.5 MiB of JSON could not be written anyway.
/// With 8 reads in parallel this bounds what Vault can make the
/// synchronizer hold (see the "hostile answer" rows of scripts/bench.sh).
pub const KV_READ_LIMIT: u64 = 1536 * 1024;
/// Answer limit of a KV folder list: about 50 000 keys of 80 bytes.
pub const KV_LIST_LIMIT: u64 = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct VaultClient {
    http: HttpClient,
    timeout: Duration,
    max_retries: u32,
    /// How long a login waits for its answer after a signal
    /// ([`VaultClient::finish_logins_after_signal`]).
    login_after_signal: Duration,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    auth: Option<RawAuth>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawAuth {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl VaultClient {
    pub fn new(settings: &VaultSettings) -> Result<Self> {
        if settings.tls.skip_verify {
            crate::log::warn("VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not verified, do not use this in production");
        }
        for warning in &settings.warnings {
            crate::log::warn(warning);
        }
        let mut headers = vec![("X-Vault-Request".to_string(), "true".to_string())];
        if let Some(ns) = &settings.namespace {
            headers.push(("X-Vault-Namespace".to_string(), ns.clone()));
        }
        headers.extend(settings.headers.iter().cloned());
        let http = HttpClient::new(
            &settings.addr,
            &settings.tls,
            settings.proxy.as_deref(),
            settings.timeout,
            headers,
        )?
        .naming(settings.addr_var)
        .follow_redirects(!settings.disable_redirects)
        .rate_limit(settings.rate_limit);
        Ok(VaultClient {
            http,
            timeout: settings.timeout,
            max_retries: settings.max_retries,
            login_after_signal: Duration::ZERO,
        })
    }

    /// A login in flight when SIGTERM/SIGINT comes waits up to `d` for its
    /// answer instead of abandoning it, so the token Vault minted is known
    /// and can be revoked (the renewer's `VAULT_REVOKE_ON_SHUTDOWN`). The
    /// login still ends as interrupted for everything after it. Mints of
    /// leased secrets (`read_leased`, `issue_certificate`) wait the same
    /// way, so the synchronizer's revoke on shutdown knows their lease.
    pub fn finish_logins_after_signal(mut self, d: Duration) -> Self {
        self.login_after_signal = d;
        self
    }

    pub fn addr(&self) -> &str {
        self.http.display_url()
    }

    fn call(&self, req: Request<'_>) -> Result<Response> {
        self.http.send(&req, Retry::Times(self.max_retries))
    }

    /// A GET with the token, retried as configured, answer up to `limit` bytes.
    fn get(&self, token: &Secret, path: &str, limit: u64) -> Result<Response> {
        self.call(
            Request::new(Method::Get, path)
                .header("X-Vault-Token", token.expose())
                .limit(limit),
        )
    }
}

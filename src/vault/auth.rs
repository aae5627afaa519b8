//! Logging in (Kubernetes and AppRole auth) and the token's own calls:
//! `lookup-self`, `renew-self`, `revoke-self`. Every path under `/v1/auth/`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::token::{check_token, check_ttl};
use super::{Envelope, VaultClient, AUTH_LIMIT};
use crate::config::{LoginMethod, LoginSettings};
use crate::error::{Error, Result};
use crate::fs::Links;
use crate::http::{retrying, Method, Request, Response, Retry};
use crate::secret::Secret;
use crate::url::encode_path;

/// Vault's refusal of a login (`invalid role name`, `permission denied`
/// for a mount that does not exist) names the variables that chose the
/// role and the mount, with their values; the error stays an API error.
/// An AppRole login names only the mount: its role id is a credential.
fn name_login(e: Error, login: &LoginSettings) -> Error {
    match e {
        Error::Api {
            context,
            status,
            message,
            retry_after,
        } => {
            let names = match &login.method {
                LoginMethod::Kubernetes { role, .. } => format!(
                    "VAULT_ROLE {role:?}, VAULT_AUTH_MOUNT_PATH {:?}",
                    login.mount
                ),
                LoginMethod::AppRole { .. } => {
                    format!("AppRole, VAULT_AUTH_MOUNT_PATH {:?}", login.mount)
                }
            };
            Error::Api {
                context: format!("{context} ({names})"),
                status,
                message,
                retry_after,
            }
        }
        other => other,
    }
}

/// The `auth` block of a login or renewal.
#[derive(Clone, Debug)]
pub struct Auth {
    pub client_token: Secret,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub warnings: Vec<String>,
}

/// What `lookup-self` says about a token.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenInfo {
    /// Seconds left.
    #[serde(default)]
    pub ttl: u64,
    #[serde(default)]
    pub creation_ttl: u64,
    #[serde(default)]
    pub explicit_max_ttl: u64,
    #[serde(default)]
    pub period: Option<u64>,
    #[serde(default)]
    pub renewable: bool,
}

impl VaultClient {
    /// Logs in, retrying transient failures until `login.timeout` has
    /// passed. The service-account JWT is re-read at every try.
    pub fn login(&self, login: &LoginSettings) -> Result<Auth> {
        let deadline = crate::time::instant_after(Instant::now(), login.timeout);
        self.login_until(login, Retry::Until(deadline))
    }

    pub fn login_until(&self, login: &LoginSettings, retry: Retry) -> Result<Auth> {
        let path = format!("/v1/auth/{}/login", encode_path(&login.mount));
        retrying(retry, self.timeout, |budget| {
            let body = match &login.method {
                LoginMethod::Kubernetes { role, jwt_path } => {
                    // Named by its variable: a missing projected token is
                    // the usual first mistake outside a pod.
                    let jwt = crate::fs::read_credential(
                        jwt_path,
                        "service account token",
                        Links::Follow,
                    )
                    .and_then(|jwt| {
                        jwt.ok_or_else(|| {
                            Error::Other(format!(
                                "service account token {} is empty",
                                jwt_path.display()
                            ))
                        })
                    })
                    .map_err(|e| e.context("SERVICE_ACCOUNT_TOKEN_PATH"))?;
                    json!({ "role": role, "jwt": jwt.expose() })
                }
                LoginMethod::AppRole { role_id, secret_id } => {
                    json!({ "role_id": role_id, "secret_id": secret_id.expose() })
                }
            };
            let resp = self.http.once(
                &Request::new(Method::Post, &path)
                    .json(&body)
                    .limit(AUTH_LIMIT)
                    .finish_after_signal(self.login_after_signal),
                budget,
            )?;
            let auth = auth_of(&resp, "login").and_then(|auth| {
                if auth.lease_duration.is_zero() {
                    return Err(Error::Invalid {
                        context: "login".into(),
                        reason: "lease_duration of 0s".into(),
                    });
                }
                Ok(auth)
            });
            // Not retried (Invalid and Decode never are): each try would
            // mint one more token. The one this answer carries is revoked.
            if auth.is_err() {
                self.revoke_minted(&resp);
            }
            auth
        })
        .map_err(|e| name_login(e, login))
    }

    /// Revokes the token in a login answer that cannot be used (its lease
    /// is missing or absurd), if it carries a well-formed one: Vault minted
    /// it, and nobody else knows it to revoke it. One try, at most 2 s.
    fn revoke_minted(&self, resp: &Response) {
        let Ok(env) = resp.json::<Envelope<Value>>("login") else {
            return;
        };
        let Some(token) = env.auth.map(|a| a.client_token) else {
            return;
        };
        if check_token(&token).is_err() {
            return;
        }
        match self.revoke_self(&Secret::new(token), Duration::from_secs(2)) {
            Ok(()) => crate::log::warn("revoked the token of the unusable login answer"),
            Err(e) => crate::log::warn(format!(
                "could not revoke the token of the unusable login answer: {e}"
            )),
        }
    }

    /// `lookup-self`, retried as configured but never past `deadline`
    /// (the expiry of the token the renewer holds, if any). TTLs over
    /// [`MAX_TTL`](super::MAX_TTL) are an invalid answer.
    pub fn lookup_self(&self, token: &Secret, deadline: Option<Instant>) -> Result<TokenInfo> {
        let mut req = Request::new(Method::Get, "/v1/auth/token/lookup-self")
            .header("X-Vault-Token", token.expose())
            .limit(AUTH_LIMIT);
        if let Some(d) = deadline {
            req = req.deadline(d);
        }
        let resp = self.call(req)?;
        let env: Envelope<TokenInfo> = resp.json("token lookup")?;
        let info = env.data.ok_or_else(|| Error::Decode {
            context: "token lookup".into(),
            reason: "response without data".into(),
        })?;
        for (what, v) in [
            ("ttl", info.ttl),
            ("creation_ttl", info.creation_ttl),
            ("explicit_max_ttl", info.explicit_max_ttl),
            ("period", info.period.unwrap_or(0)),
        ] {
            check_ttl(what, v).map_err(|reason| Error::Invalid {
                context: "token lookup".into(),
                reason,
            })?;
        }
        Ok(info)
    }

    /// Renews with `increment` (zero lets Vault choose). One try, ending by
    /// `deadline` at the latest: the renewer schedules its own retries
    /// around the token's expiry. A lease of zero is an invalid answer.
    pub fn renew_self(
        &self,
        token: &Secret,
        increment: Duration,
        deadline: Instant,
    ) -> Result<Auth> {
        let resp = self.http.once(
            &Request::new(Method::Post, "/v1/auth/token/renew-self")
                .header("X-Vault-Token", token.expose())
                .json(&json!({ "increment": increment.as_secs() }))
                .limit(AUTH_LIMIT)
                .deadline(deadline),
            self.timeout,
        )?;
        let auth = auth_of(&resp, "token renewal")?;
        if auth.lease_duration.is_zero() {
            return Err(Error::Invalid {
                context: "token renewal".into(),
                reason: "lease_duration of 0s".into(),
            });
        }
        Ok(auth)
    }

    /// `revoke-self`, one try within `within`, even after a signal (it is
    /// what the renewer does on SIGTERM).
    pub fn revoke_self(&self, token: &Secret, within: Duration) -> Result<()> {
        self.http.once(
            &Request::new(Method::Post, "/v1/auth/token/revoke-self")
                .header("X-Vault-Token", token.expose())
                .limit(AUTH_LIMIT)
                .uninterruptible(),
            within,
        )?;
        Ok(())
    }
}

fn auth_of(resp: &Response, what: &str) -> Result<Auth> {
    let env: Envelope<Value> = resp.json(what)?;
    let auth = env.auth.ok_or_else(|| Error::Decode {
        context: what.to_string(),
        reason: "response without auth block".into(),
    })?;
    let invalid = |reason| Error::Invalid {
        context: what.to_string(),
        reason,
    };
    check_token(&auth.client_token).map_err(invalid)?;
    let lease_duration = check_ttl("lease_duration", auth.lease_duration).map_err(invalid)?;
    Ok(Auth {
        client_token: Secret::new(auth.client_token),
        lease_duration,
        renewable: auth.renewable,
        warnings: env.warnings.unwrap_or_default(),
    })
}

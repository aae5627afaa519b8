//! Settings of vault-kubernetes-token-renewer.

use std::time::Duration;

use super::{Env, EventSettings, LoginSettings, TokenFileSettings, VaultSettings};
use crate::error::{Error, Result};

/// vault-kubernetes-token-renewer.
#[derive(Clone, Debug)]
pub struct RenewerConfig {
    pub vault: VaultSettings,
    pub token_file: TokenFileSettings,
    /// Present when `VAULT_REAUTH=true`.
    pub login: Option<LoginSettings>,
    /// Requested increment; zero lets Vault pick the role's TTL.
    pub ttl: Duration,
    pub revoke_on_shutdown: bool,
    /// Events on the pod, when `POD_NAME` is set.
    pub events: Option<EventSettings>,
    /// What to report at start (why Events are off).
    pub warnings: Vec<String>,
}

impl RenewerConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        let reauth = env.bool("VAULT_REAUTH", false)?;
        // Vault takes the increment in whole seconds, up to what Go's
        // durations hold (MAX_DURATION, checked by the parser); a fraction
        // of a second would become 0, "the token's own TTL".
        let ttl = env.duration("VAULT_TTL", Duration::ZERO)?;
        if !ttl.is_zero() && ttl < Duration::from_secs(1) {
            return Err(Error::config(
                "VAULT_TTL",
                format!("{ttl:?} is less than 1s, the smallest increment Vault takes"),
            ));
        }
        let mut warnings = Vec::new();
        let events =
            EventSettings::from_env(env, "vault-kubernetes-token-renewer", None, &mut warnings);
        Ok(RenewerConfig {
            events,
            warnings,
            token_file: TokenFileSettings::from_env(env)?,
            ttl,
            revoke_on_shutdown: env.bool("VAULT_REVOKE_ON_SHUTDOWN", false)?,
            vault: VaultSettings::from_env(env)?,
            login: if reauth {
                Some(LoginSettings::from_env(env)?)
            } else {
                None
            },
        })
    }
}

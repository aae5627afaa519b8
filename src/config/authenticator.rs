//! Settings of vault-kubernetes-authenticator.

use super::{Env, LoginSettings, TokenFileSettings, VaultSettings};
use crate::error::Result;

/// vault-kubernetes-authenticator.
#[derive(Clone, Debug)]
pub struct AuthenticatorConfig {
    pub vault: VaultSettings,
    pub login: LoginSettings,
    pub token_file: TokenFileSettings,
    pub allow_fail: bool,
}

impl AuthenticatorConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(AuthenticatorConfig {
            token_file: TokenFileSettings::from_env(env)?,
            allow_fail: env.bool("ALLOW_FAIL", false)?,
            vault: VaultSettings::from_env(env)?,
            login: LoginSettings::from_env(env)?,
        })
    }
}

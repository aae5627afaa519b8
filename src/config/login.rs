//! Login and the token file, shared by the authenticator, the renewer
//! (`VAULT_REAUTH`) and the synchronizer (which reads the token): the auth
//! method, its mount and deadline, and where and how the token is written.

use std::path::PathBuf;
use std::time::Duration;

use super::{file_mode, file_owner, Env, DEFAULT_SA_DIR};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// How to log in to Vault.
#[derive(Clone, Debug)]
pub enum LoginMethod {
    /// Kubernetes auth: the service-account JWT is re-read at every attempt
    /// because projected tokens rotate.
    Kubernetes {
        role: String,
        jwt_path: PathBuf,
    },
    AppRole {
        role_id: String,
        secret_id: Secret,
    },
}

#[derive(Clone, Debug)]
pub struct LoginSettings {
    pub method: LoginMethod,
    /// Normalised mount, e.g. `kubernetes`.
    pub mount: String,
    /// Deadline for the whole login, retries included. Defaults to 30 s.
    pub timeout: Duration,
}

impl LoginSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        let role_id = env.string("VAULT_ROLE_ID");
        let secret_id = env.get("VAULT_SECRET_ID").map(|s| Secret::new(s.trim()));
        let (method, default_mount) = match (role_id, secret_id) {
            (Some(role_id), Some(secret_id)) => {
                (LoginMethod::AppRole { role_id, secret_id }, "approle")
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "VAULT_SECRET_ID",
                    "missing: AppRole login needs VAULT_ROLE_ID and VAULT_SECRET_ID",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "VAULT_ROLE_ID",
                    "missing: AppRole login needs VAULT_ROLE_ID and VAULT_SECRET_ID",
                ))
            }
            (None, None) => (
                LoginMethod::Kubernetes {
                    role: env.required("VAULT_ROLE")?,
                    jwt_path: env.string("SERVICE_ACCOUNT_TOKEN_PATH").map_or_else(
                        || PathBuf::from(DEFAULT_SA_DIR).join("token"),
                        PathBuf::from,
                    ),
                },
                "kubernetes",
            ),
        };
        let mount = match env.get("VAULT_AUTH_MOUNT_PATH") {
            None => default_mount.to_string(),
            Some(v) => normalize_mount(v).ok_or_else(|| {
                Error::config(
                    "VAULT_AUTH_MOUNT_PATH",
                    format!("invalid mount {v:?}, expected e.g. kubernetes or auth/kubernetes"),
                )
            })?,
        };
        Ok(LoginSettings {
            method,
            mount,
            timeout: env.duration("LOGIN_TIMEOUT", Duration::from_secs(30))?,
        })
    }
}

/// `kubernetes`, `/kubernetes`, `auth/kubernetes`, `/auth/kubernetes/` all
/// mean the mount `kubernetes`, as in the Go tool.
pub fn normalize_mount(v: &str) -> Option<String> {
    let v = v.trim().trim_matches('/');
    let v = v.strip_prefix("auth/").unwrap_or(v).trim_matches('/');
    let ok = !v.is_empty()
        && v != "auth"
        && v.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !v.contains(['?', '#', ' ']);
    ok.then(|| v.to_string())
}

/// Where and how the token file is written.
#[derive(Clone, Debug)]
pub struct TokenFileSettings {
    pub path: PathBuf,
    /// Defaults to 0640 (Vault Agent's sink mode): an app container running as
    /// another user reads it through the group the pod's `fsGroup` gives the
    /// volume; others never can.
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl TokenFileSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        let path = PathBuf::from(
            env.string("VAULT_TOKEN_PATH")
                .ok_or_else(|| Error::config("VAULT_TOKEN_PATH", "missing VAULT_TOKEN_PATH"))?,
        );
        let mode = file_mode(env, "VAULT_TOKEN_FILE_MODE", 0o640)?;
        let (uid, gid) = file_owner(env, "VAULT_TOKEN_FILE_OWNER")?;
        Ok(TokenFileSettings {
            path,
            mode,
            uid,
            gid,
        })
    }
}

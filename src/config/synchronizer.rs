//! Settings of vault-kubernetes-synchronizer: the `VAULT_SECRETS`
//! mapping, names, labels and annotation of the Secrets it owns, the
//! interval, and where it writes (Kubernetes Secrets or files).

use std::path::PathBuf;
use std::time::Duration;

use super::{
    file_mode, file_owner, parse_duration, Env, KubeSettings, TokenFileSettings, VaultSettings,
};
use crate::error::{Error, Result};
use crate::mapping::{self, Entry};

pub const DEFAULT_ANNOTATION: &str = "vault-secret";

/// Where the synchronizer writes: Kubernetes Secrets, or files when
/// `SYNCHRONIZER_TARGET_DIR` is set.
#[derive(Clone, Debug)]
pub enum SyncTarget {
    Secrets(KubeSettings),
    Files(FilesSettings),
}

/// The file target: one directory per Secret name under `dir`, laid out
/// like a mounted Secret volume (see [`crate::sync::files`]).
#[derive(Clone, Debug)]
pub struct FilesSettings {
    /// `SYNCHRONIZER_TARGET_DIR`; must exist (a volume mount).
    pub dir: PathBuf,
    /// Mode of each file, `SYNCHRONIZER_FILE_MODE`. Defaults to 0440.
    pub mode: u32,
    /// `SYNCHRONIZER_FILE_OWNER`, as `VAULT_TOKEN_FILE_OWNER`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FilesSettings {
    /// `None` unless `SYNCHRONIZER_TARGET_DIR` is set.
    pub fn from_env(env: &Env) -> Result<Option<Self>> {
        let Some(dir) = env.string("SYNCHRONIZER_TARGET_DIR") else {
            return Ok(None);
        };
        if !dir.starts_with('/') {
            return Err(Error::config(
                "SYNCHRONIZER_TARGET_DIR",
                format!("{dir:?} is not an absolute path"),
            ));
        }
        let (uid, gid) = file_owner(env, "SYNCHRONIZER_FILE_OWNER")?;
        Ok(Some(FilesSettings {
            dir: PathBuf::from(dir),
            mode: file_mode(env, "SYNCHRONIZER_FILE_MODE", 0o440)?,
            uid,
            gid,
        }))
    }
}

/// vault-kubernetes-synchronizer.
#[derive(Clone, Debug)]
pub struct SynchronizerConfig {
    pub vault: VaultSettings,
    pub token_path: PathBuf,
    pub entries: Vec<Entry>,
    pub prefix: String,
    pub annotation: String,
    pub labels: Vec<(String, String)>,
    pub prune: bool,
    /// Continuous mode when set.
    pub interval: Option<Duration>,
    pub target: SyncTarget,
    /// Go-compatible inputs we accepted with a choice to report at start.
    pub warnings: Vec<String>,
}

impl SynchronizerConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        let token_path = TokenFileSettings::from_env(env)?.path;
        let prefix = env.string("SECRET_PREFIX").unwrap_or_default();
        let (entries, mut warnings) =
            mapping::parse_entries(&env.required("VAULT_SECRETS")?, &prefix)?;
        let annotation = env
            .string("SYNCHRONIZER_ANNOTATION")
            .unwrap_or_else(|| DEFAULT_ANNOTATION.to_string());
        if !mapping::is_qualified_key(&annotation) {
            return Err(Error::config(
                "SYNCHRONIZER_ANNOTATION",
                format!("invalid annotation key {annotation:?}, expected [prefix/]name as in Kubernetes"),
            ));
        }
        let labels = match env.get("SYNCHRONIZER_LABELS") {
            None => Vec::new(),
            Some(v) => {
                let (labels, ignored) = mapping::parse_labels(v)?;
                warnings.extend(ignored);
                labels
            }
        };
        let interval = match env.get("SYNC_INTERVAL") {
            None => None,
            Some(v) => {
                let d = parse_duration(v.trim()).map_err(|e| Error::config("SYNC_INTERVAL", e))?;
                if d < Duration::from_secs(1) {
                    return Err(Error::config(
                        "SYNC_INTERVAL",
                        format!("interval {v:?} too short, at least 1s"),
                    ));
                }
                Some(d)
            }
        };
        Ok(SynchronizerConfig {
            vault: VaultSettings::from_env(env)?,
            token_path,
            entries,
            prefix,
            annotation,
            labels,
            prune: env.bool("SYNCHRONIZER_PRUNE", true)?,
            interval,
            // The file target needs no API server: nothing Kubernetes is read.
            target: match FilesSettings::from_env(env)? {
                Some(files) => SyncTarget::Files(files),
                None => SyncTarget::Secrets(KubeSettings::from_env(env)?),
            },
            warnings,
        })
    }
}

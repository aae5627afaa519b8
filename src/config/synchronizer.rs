//! Settings of vault-kubernetes-synchronizer: the `VAULT_SECRETS`
//! mapping, names, labels and annotation of the Secrets it owns, the
//! interval, where it writes (Kubernetes Secrets or files), and what it
//! does with the leases of its leased entries on shutdown.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    file_mode, file_owner, parse_duration, Env, EventSettings, KubeSettings, TokenFileSettings,
    VaultSettings,
};
use crate::error::{Error, Result};
use crate::mapping::{self, Entry, Kind};

pub const DEFAULT_ANNOTATION: &str = "vault-secret";
/// The synchronizer's Events' `reportingController`.
const CONTROLLER: &str = "vault-kubernetes-synchronizer";

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
    /// `VAULT_REVOKE_ON_SHUTDOWN` (as the renewer's): on SIGTERM, revoke the
    /// leases of the leased entries written to files.
    pub revoke_on_shutdown: bool,
    /// `SYNCHRONIZER_ID`: who owns the Secrets (or the target directory)
    /// this synchronizer writes. `None`: the pod's controller decides (see
    /// [`crate::sync::owner`]).
    pub id: Option<String>,
    /// This pod's name, for the default identity: `POD_NAME` (the downward
    /// API), else the host name, which Kubernetes sets to the pod's name.
    pub pod_name: Option<String>,
    /// Events on the pod, in continuous mode only (an init container's
    /// failure is its termination message).
    pub events: Option<EventSettings>,
    /// Go-compatible inputs we accepted with a choice to report at start.
    pub warnings: Vec<String>,
}

/// The longest `SYNCHRONIZER_ID`: an annotation value fits far more, but
/// the identity is logged in every ownership warning.
pub const MAX_ID_LEN: usize = 253;

/// `SYNCHRONIZER_ID`: 1 to [`MAX_ID_LEN`] printable ASCII characters
/// without spaces, such as `Deployment/app` or `team-a.sync`.
fn synchronizer_id(env: &Env) -> Result<Option<String>> {
    let Some(id) = env.string("SYNCHRONIZER_ID") else {
        return Ok(None);
    };
    if id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::config(
            "SYNCHRONIZER_ID",
            format!(
                "invalid identity {id:?}: 1 to {MAX_ID_LEN} printable characters without spaces"
            ),
        ));
    }
    Ok(Some(id))
}

/// `POD_NAME`, else the kernel's host name (`/proc/sys/kernel/hostname`):
/// a container's host name is its pod's name unless `spec.hostname` is set.
/// A host name that is not a valid pod name is no name; an invalid
/// `POD_NAME` is an error where it decides the identity (`secrets`: the
/// Secrets target), as a silent "no name" would turn pruning off unseen.
fn pod_name(env: &Env, secrets: bool) -> Result<Option<String>> {
    if let Some(name) = env.string("POD_NAME") {
        if mapping::is_dns_subdomain(&name) {
            return Ok(Some(name));
        }
        if secrets {
            return Err(Error::config(
                "POD_NAME",
                format!("invalid pod name {name:?} (lower-case RFC 1123 subdomain, at most 253 characters); set it from the downward API (metadata.name)"),
            ));
        }
        return Ok(None);
    }
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| mapping::is_dns_subdomain(h)))
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
        // The file target needs no API server: nothing Kubernetes is read.
        let target = match FilesSettings::from_env(env)? {
            Some(files) => SyncTarget::Files(files),
            None => SyncTarget::Secrets(KubeSettings::from_env(env)?),
        };
        check_leased(&entries, &target)?;
        let pod_name = pod_name(env, matches!(target, SyncTarget::Secrets(_)))?;
        let events = match (&target, interval) {
            (_, None) => None,
            (SyncTarget::Secrets(kube), Some(_)) => {
                EventSettings::from_env(env, CONTROLLER, Some(kube), &mut warnings)
            }
            (SyncTarget::Files(_), Some(_)) => {
                EventSettings::from_env(env, CONTROLLER, None, &mut warnings)
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
            target,
            revoke_on_shutdown: env.bool("VAULT_REVOKE_ON_SHUTDOWN", false)?,
            id: synchronizer_id(env)?,
            pod_name,
            events,
            warnings,
        })
    }
}

/// What the syntax alone cannot tell about leased entries: a certificate's
/// TTL is a duration (Vault's syntax, as `SYNC_INTERVAL`'s), and credentials
/// go to files only: their lease belongs to one pod's token and ends with
/// it, while a Secret is shared by every replica and outlives the pod.
fn check_leased(entries: &[Entry], target: &SyncTarget) -> Result<()> {
    for entry in entries {
        match &entry.kind {
            Kind::Creds if matches!(target, SyncTarget::Secrets(_)) => {
                return Err(Error::config(
                    "VAULT_SECRETS",
                    format!(
                        "entry {:?}: credentials are written to files only (set SYNCHRONIZER_TARGET_DIR): \
                         their lease ends with this pod's token, a Secret is shared by every replica",
                        entry.raw
                    ),
                ))
            }
            Kind::Cert(req) => {
                if let Some(ttl) = &req.ttl {
                    let d = parse_duration(ttl).map_err(|e| {
                        Error::config("VAULT_SECRETS", format!("entry {:?}: ttl: {e}", entry.raw))
                    })?;
                    if d < Duration::from_secs(1) {
                        return Err(Error::config(
                            "VAULT_SECRETS",
                            format!("entry {:?}: ttl {ttl:?} is less than 1s", entry.raw),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

//! vault-kubernetes-synchronizer: plan, then apply. The plan ([`plan`](mod@plan))
//! reads every Vault secret of the mapping and checks it locally; only then
//! does a sink write it: Kubernetes Secrets ([`secrets`]) or files laid out
//! like a mounted Secret volume ([`files`]). A failed read or an invalid
//! name means no write and no delete at all.

use std::collections::HashSet;

use crate::config::{SyncTarget, SynchronizerConfig};
use crate::error::{Error, Result};
use crate::kube::KubeClient;
use crate::log;
use crate::mapping::Target;
use crate::signals::Shutdown;
use crate::token_file;
use crate::vault::VaultClient;

pub mod files;
pub mod parallel;
pub mod plan;
pub mod secrets;

pub use self::files::FileTarget;
pub use self::plan::{
    checksum, plan, to_secret_data, Desired, Plan, Summary, CHECKSUM_ANNOTATION, MAX_ANNOTATIONS,
    MAX_SECRET_DATA,
};
pub use self::secrets::{apply, MANAGED_LABEL};

/// Where the plan is applied: the same plan, two ways of writing it.
pub enum Sink {
    // Boxed: a client is much larger than the file target.
    Secrets(Box<KubeClient>),
    Files(FileTarget),
}

impl Sink {
    pub fn new(target: &SyncTarget) -> Result<Self> {
        Ok(match target {
            SyncTarget::Secrets(kube) => Sink::Secrets(Box::new(KubeClient::new(kube)?)),
            SyncTarget::Files(files) => Sink::Files(FileTarget::new(files)),
        })
    }
}

/// Synchronizes once, or every `SYNC_INTERVAL`. SIGTERM/SIGINT abandon
/// the requests in flight at once and start nothing new (no further read,
/// no write, no delete); a run cut short this way is never pruned from.
pub fn run(cfg: &SynchronizerConfig) -> Result<()> {
    let shutdown = Shutdown::install()?;
    // The Go synchronizer's first line, word for word (Go had no file target).
    if matches!(cfg.target, SyncTarget::Secrets(_)) {
        log::info(format!(
            "Using annotation [ {} ] to detect managed secrets",
            cfg.annotation
        ));
    }
    for warning in &cfg.warnings {
        log::warn(warning);
    }
    let vault = VaultClient::new(&cfg.vault)?;
    let sink = Sink::new(&cfg.target)?;
    let Some(interval) = cfg.interval else {
        return sync_once(cfg, &vault, &sink).map(|_| ());
    };
    loop {
        match sync_once(cfg, &vault, &sink) {
            Ok(_) => {}
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => log::error(format!(
                "synchronization failed, retrying in the next cycle: {e}"
            )),
        }
        // ±10% so replicas started together spread their load.
        let wait = interval.mul_f64(0.9 + 0.2 * crate::random::random_unit());
        if shutdown.sleep(wait) {
            log::info("signal received - stop execution");
            return Ok(());
        }
    }
}

/// One synchronization: plan, then apply, then prune.
pub fn sync_once(cfg: &SynchronizerConfig, vault: &VaultClient, sink: &Sink) -> Result<Summary> {
    let Some(token) = token_file::read(&cfg.token_path)? else {
        return missing_token(cfg, sink);
    };
    let plan = plan(cfg, vault, &token)?;
    if crate::signals::received() {
        return Err(Error::Interrupted);
    }
    let summary = match sink {
        Sink::Secrets(kube) => apply(cfg, kube, &plan)?,
        Sink::Files(files) => files.apply(&plan, cfg.prune)?,
    };
    log::info("secrets successfully synchronized");
    log::info(format!(
        "summary: created {}, updated {}, unchanged {}, deleted {}, not found {}, ignored {}",
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.deleted,
        summary.not_found,
        summary.ignored
    ));
    Ok(summary)
}

/// The Go fallback when the authenticator ran with `ALLOW_FAIL` and left no
/// token: fine if every Secret we would write already exists.
fn missing_token(cfg: &SynchronizerConfig, sink: &Sink) -> Result<Summary> {
    let why = format!("no vault token at {}", cfg.token_path.display());
    // (name, Vault path if ours): any Secret of that name counts, as in the
    // Go tool; a folder needs one of ours from it.
    let (existing, what): (Vec<(String, Option<String>)>, _) = match sink {
        Sink::Secrets(kube) => (
            kube.list_secret_metadata()?
                .into_iter()
                .map(|m| {
                    let path = m.annotations.get(&cfg.annotation).cloned();
                    (m.name, path)
                })
                .collect(),
            "k8s secret",
        ),
        Sink::Files(files) => (
            files
                .present()?
                .into_iter()
                .map(|(name, path)| (name, Some(path)))
                .collect(),
            "directory of secret",
        ),
    };
    let names: HashSet<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing = Vec::new();
    for entry in &cfg.entries {
        match &entry.target {
            Target::Single { name } => {
                log::info(format!(
                    "check {what} {name} from vault secret {}",
                    entry.path
                ));
                if !names.contains(name.as_str()) {
                    missing.push(name.clone());
                }
            }
            Target::Folder => {
                log::info(format!("check {what}s from vault folder {}/", entry.path));
                let folder = format!("{}/", entry.path);
                let found = existing
                    .iter()
                    .any(|(_, p)| p.as_ref().is_some_and(|p| p.starts_with(&folder)));
                if !found {
                    missing.push(format!("{folder} (no secret from this folder)"));
                }
            }
        }
    }
    if missing.is_empty() {
        log::info(format!(
            "cannot synchronize secrets - all secrets seems to be available therefore pod creation will continue: {why}"
        ));
        return Ok(Summary::default());
    }
    Err(Error::Other(format!(
        "cannot synchronize secrets: {why}; missing: {}",
        missing.join(", ")
    )))
}

//! vault-kubernetes-synchronizer: plan, then apply. The plan ([`plan`](mod@plan))
//! reads every Vault secret of the mapping and checks it locally; only then
//! does a sink write it: Kubernetes Secrets ([`secrets`]) or files laid out
//! like a mounted Secret volume ([`files`]). A failed read or an invalid
//! name means no write and no delete at all. Leased entries (credentials,
//! certificates) are kept valid by [`leased`] and go through the same plan
//! and sinks.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Instant;

use crate::config::{SyncTarget, SynchronizerConfig};
use crate::error::{Error, Result};
use crate::events::{Reason, Recorder};
use crate::http::backoff;
use crate::kube::KubeClient;
use crate::log;
use crate::mapping::Target;
use crate::random::random_unit;
use crate::secret::Secret;
use crate::signals::Shutdown;
use crate::time::instant_after;
use crate::token_file;
use crate::vault::VaultClient;
use crate::watch::{wait, Wake, Watch};

pub mod files;
pub mod leased;
pub mod owner;
pub mod plan;
pub mod secrets;

pub use self::files::FileTarget;
pub use self::leased::Leases;
pub use self::owner::Identity;
pub use self::plan::{
    checksum, plan, to_secret_data, Desired, Plan, Reread, Summary, CHECKSUM_ANNOTATION,
    MAX_ANNOTATIONS, MAX_SECRET_DATA,
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
            SyncTarget::Files(files) => Sink::Files(FileTarget::open(files)?),
        })
    }
}

/// Synchronizes once, or every `SYNC_INTERVAL`. SIGTERM/SIGINT abandon
/// the requests in flight at once and start nothing new (no further read,
/// no write, no delete); a run cut short this way is never pruned from.
///
/// With leased entries the sidecar also wakes when one is due or when the
/// token file changes, and only those entries are served then; the sinks
/// write only when their data changed. On SIGTERM with
/// `VAULT_REVOKE_ON_SHUTDOWN`, the leases of entries written to files are
/// revoked within [`leased::REVOKE_WITHIN`].
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
    let mut leases = Leases::new(&cfg.entries);
    let mut vault = VaultClient::new(&cfg.vault)?;
    if cfg.revoke_on_shutdown && !leases.is_empty() {
        // Credentials minted while SIGTERM comes: their lease is revoked too.
        vault = vault.finish_logins_after_signal(leased::REVOKE_WITHIN);
    }
    let sink = Sink::new(&cfg.target)?;
    leases.describe(cfg.interval.is_some());
    let Some(interval) = cfg.interval else {
        sync_once(cfg, &vault, &sink, &mut leases)?;
        return leases.all_held().map_err(Error::Other);
    };
    // Only leased entries need to hear of a new token at once.
    let mut watch = match leases.is_empty() {
        true => None,
        false => Some(Watch::new(&cfg.token_path)?),
    };
    let mut next_sync = Instant::now();
    // Failed runs in a row while leased data waits to be written.
    let mut write_failures = 0;
    // Only in continuous mode (config): Events on the pod.
    let events = Recorder::start(cfg.events.as_ref());
    loop {
        let result = if Instant::now() >= next_sync {
            // ±10% so replicas started together spread their load.
            let wait = interval.mul_f64(0.9 + 0.2 * random_unit());
            next_sync = instant_after(Instant::now(), wait);
            sync_once(cfg, &vault, &sink, &mut leases).map(Some)
        } else {
            // A lease's timer or a new token: a full run only if data changed.
            match serve_leases(cfg, &vault, &sink, &mut leases) {
                Ok(true) => sync_once(cfg, &vault, &sink, &mut leases).map(Some),
                other => other.map(|_| None),
            }
        };
        for (reason, note) in leases.take_notices() {
            events.report(reason, log::one_line(&note));
        }
        match result {
            Ok(summary) => report(&events, summary.as_ref()),
            Err(Error::Interrupted) => return stop(cfg, &vault, &sink, &leases),
            Err(e) => {
                let e = log::one_line(&e.to_string()).into_owned();
                // New credentials or a new certificate not written: the
                // delivered ones may be ending, so the write is tried again
                // after a backoff rather than a SYNC_INTERVAL later.
                let when = if leases.unwritten() {
                    write_failures += 1;
                    let wait = backoff(write_failures);
                    next_sync = next_sync.min(instant_after(Instant::now(), wait));
                    format!(
                        "in {:.1}s (leased data not written yet)",
                        wait.as_secs_f64()
                    )
                } else {
                    "in the next cycle".to_string()
                };
                log::error(format!("synchronization failed, retrying {when}: {e}"));
                events.report(Reason::SyncFailed, e);
            }
        }
        if !leases.unwritten() {
            write_failures = 0;
        }
        let until = leases
            .next_due()
            .map_or(next_sync, |due| due.min(next_sync));
        let woke = match &mut watch {
            Some(watch) => wait(&shutdown, watch, until)?,
            None if shutdown.sleep(until.saturating_duration_since(Instant::now())) => Wake::Signal,
            None => Wake::Timer,
        };
        if woke == Wake::Signal {
            return stop(cfg, &vault, &sink, &leases);
        }
    }
}

/// The end of the sidecar: with `VAULT_REVOKE_ON_SHUTDOWN`, the leases held
/// for files are revoked (a Secret is shared: its certificate stays valid).
fn stop(cfg: &SynchronizerConfig, vault: &VaultClient, sink: &Sink, leases: &Leases) -> Result<()> {
    log::info("signal received - stop execution");
    if cfg.revoke_on_shutdown && !leases.is_empty() {
        match (sink, token_file::read(&cfg.token_path)) {
            (Sink::Files(_), Ok(Some(token))) => leases.revoke_all(vault, &token, leased::REVOKE_WITHIN),
            (Sink::Files(_), _) => log::warn(format!(
                "no vault token at {} to revoke the leases with; they end with their TTL or their token",
                cfg.token_path.display()
            )),
            (Sink::Secrets(_), _) => log::info(
                "leases of certificates in Secrets are not revoked: the Secrets are shared and outlive this pod",
            ),
        }
    }
    Ok(())
}

/// Serves the leased entries only; true when their data changed.
fn serve_leases(
    cfg: &SynchronizerConfig,
    vault: &VaultClient,
    sink: &Sink,
    leases: &mut Leases,
) -> Result<bool> {
    let Some(token) = token_file::read(&cfg.token_path)? else {
        return Ok(false);
    };
    serve(cfg, vault, sink, leases, &token)
}

fn serve(
    cfg: &SynchronizerConfig,
    vault: &VaultClient,
    sink: &Sink,
    leases: &mut Leases,
    token: &Secret,
) -> Result<bool> {
    match sink {
        Sink::Secrets(kube) => leases.service(vault, token, &SecretShelf { cfg, kube }),
        Sink::Files(_) => leases.service(vault, token, &leased::Unshared),
    }
}

/// Certificate Secrets shared by the replicas of a synchronizer.
struct SecretShelf<'a> {
    cfg: &'a SynchronizerConfig,
    kube: &'a KubeClient,
}

impl leased::Shelf for SecretShelf<'_> {
    fn read(&self, name: &str) -> Result<Option<leased::Shared>> {
        let Some(secret) = self.kube.get_secret(name)? else {
            return Ok(None);
        };
        let annotations = &secret["metadata"]["annotations"];
        let Some(path) = annotations[&self.cfg.annotation]
            .as_str()
            .map(str::to_string)
        else {
            return Ok(None);
        };
        // Another synchronizer's Secret: no claim written on it, and no
        // certificate issued that could not be delivered.
        let meta: crate::kube::SecretMeta =
            serde_json::from_value(secret["metadata"].clone()).unwrap_or_default();
        let me = identity(self.cfg, self.kube)?;
        if let Some(owner) = secrets::owned_elsewhere(&meta, self.cfg, me) {
            return Err(Error::Other(format!(
                "secret {name} belongs to {owner}; this synchronizer ({}) maps it too and leaves it as it is",
                me.describe()
            )));
        }
        let claimed_until = annotations[leased::CLAIM_ANNOTATION]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        let data: std::collections::BTreeMap<String, String> =
            serde_json::from_value(secret["data"].clone()).unwrap_or_default();
        Ok(crate::kube::decode_data(&data).map(|data| leased::Shared {
            path,
            data,
            claimed_until,
            secret,
        }))
    }

    fn claim(&self, shared: &leased::Shared, until: std::time::SystemTime) -> Result<bool> {
        let mut secret = shared.secret.clone();
        let secs = until
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(md) = secret["metadata"].as_object_mut() else {
            return Ok(false);
        };
        let annotations = md
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        annotations[leased::CLAIM_ANNOTATION] = secs.to_string().into();
        let name = shared.secret["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        Ok(self.kube.replace_secret(name, &secret)? == crate::kube::Write::Done)
    }
}

/// The actions of a cycle a user wants to see as Events.
fn report(events: &Recorder, summary: Option<&Summary>) {
    let Some(summary) = summary else { return };
    if !summary.pruned.is_empty() {
        events.report(
            Reason::SecretsPruned,
            format!(
                "deleted {} no longer listed in VAULT_SECRETS: {}",
                summary.pruned.len(),
                summary.pruned.join(", ")
            ),
        );
    }
    if !summary.repaired.is_empty() {
        events.report(
            Reason::DriftRepaired,
            format!(
                "restored from Vault after a change outside the synchronizer: {}",
                summary.repaired.join(", ")
            ),
        );
    }
}

/// One synchronization: plan, then apply, then prune.
pub fn sync_once(
    cfg: &SynchronizerConfig,
    vault: &VaultClient,
    sink: &Sink,
    leases: &mut Leases,
) -> Result<Summary> {
    let Some(token) = token_file::read(&cfg.token_path)? else {
        return missing_token(cfg, sink);
    };
    serve(cfg, vault, sink, leases, &token)?;
    // A failed KV read means no KV write and no prune. The leased entries
    // do not depend on it: they are written alone, without pruning, since
    // credentials or a certificate just obtained must replace those whose
    // lease is ending (the next full run may be a SYNC_INTERVAL away).
    let (mut plan, prune, kv_failure) = match plan(cfg, vault, &token) {
        Ok(plan) => (plan, cfg.prune, None),
        Err(e) if leases.is_empty() || matches!(e, Error::Interrupted) => return Err(e),
        Err(e) => (Plan::default(), false, Some(e)),
    };
    leases.extend_plan(&mut plan);
    if crate::signals::received() {
        return Err(Error::Interrupted);
    }
    let reread = Reread {
        cfg,
        vault,
        token: &token,
    };
    let summary = match sink {
        Sink::Secrets(kube) => apply(cfg, kube, &plan, identity(cfg, kube)?, &reread, prune)?,
        Sink::Files(files) => files.apply(&plan, prune, cfg.id.as_deref(), &reread)?,
    };
    leases.written();
    if let Some(e) = kv_failure {
        log::info(format!(
            "leased entries written ({} unchanged, {} written), nothing pruned",
            summary.unchanged,
            summary.created + summary.updated
        ));
        return Err(e);
    }
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

/// This synchronizer's identity (see [`owner`]), found at the first run
/// that gets that far and kept for the process's life: one line says what
/// it is, or a warning why there is none and what that turns off.
fn identity<'a>(cfg: &SynchronizerConfig, kube: &KubeClient) -> Result<&'a Identity> {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    if let Some(known) = IDENTITY.get() {
        return Ok(known);
    }
    let found = owner::resolve(cfg, kube)?;
    match &found {
        Identity::Known(id, None) => log::info(format!("synchronizer identity: {id}")),
        Identity::Known(id, Some(rollout)) => log::info(format!(
            "synchronizer identity: {id} (rollout revision {})",
            rollout.revision
        )),
        Identity::Unknown(why) => log::warn(format!(
            "no synchronizer identity ({why}): nothing is pruned, and only Secrets without an owner, from the same Vault path and with our labels, are updated; set SYNCHRONIZER_ID, or let the service account get pods and apps/replicasets"
        )),
    }
    Ok(IDENTITY.get_or_init(|| found))
}

/// The Go fallback when the authenticator ran with `ALLOW_FAIL` and left no
/// token: fine if every Secret we would write already exists.
fn missing_token(cfg: &SynchronizerConfig, sink: &Sink) -> Result<Summary> {
    let why = format!("no vault token at {}", cfg.token_path.display());
    // (name, Vault path if ours): any Secret of that name counts, as in the
    // Go tool; a folder needs one of ours from it.
    let (existing, what): (Vec<(String, Option<String>)>, _) = match sink {
        Sink::Secrets(kube) => (
            kube.list_secret_metadata(&[&cfg.annotation])?
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

//! vault-kubernetes-synchronizer: read every Vault secret of the mapping
//! first (the plan), check every name, key and value locally, and only then
//! create, update and prune Kubernetes Secrets. A failed read or an invalid
//! name means no write and no delete at all.
//!
//! Managed Secrets carry the annotation `SYNCHRONIZER_ANNOTATION` (value:
//! the Vault path), `vault-kubernetes/sha256`, a digest of the data we
//! wrote, and the label `vault-kubernetes/managed=true`. A run decides from
//! two list calls: the metadata of the namespace's Secrets (what exists,
//! what is ours, what to prune) and the data of only the Secrets with our
//! label (drift: a hand-edited Secret is rewritten). Memory does not grow
//! with unrelated Secrets, and a no-op run writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::config::{Secret, SyncTarget, SynchronizerConfig};
use crate::error::{Error, Result};
use crate::files::FileTarget;
use crate::kube::{KubeClient, SecretMeta, Write};
use crate::mapping::{self, Target};
use crate::signals::Shutdown;
use crate::vault::{KvMount, VaultClient};
use crate::{base64, log, token_file};

/// Annotation holding the SHA-256 of the data we last wrote.
pub const CHECKSUM_ANNOTATION: &str = "vault-kubernetes/sha256";
/// Label on every Secret we write, so one label-selected list returns the
/// data of ours and nothing else (an annotation cannot be selected on).
pub const MANAGED_LABEL: (&str, &str) = ("vault-kubernetes/managed", "true");
/// A Secret's data: key to bytes.
type Data = BTreeMap<String, Vec<u8>>;
/// Concurrent Vault reads and Kubernetes writes.
const WORKERS: usize = 8;

/// One Kubernetes Secret the plan wants.
#[derive(Clone, Debug)]
pub struct Desired {
    pub name: String,
    /// Vault path it comes from; the annotation's value.
    pub vault_path: String,
    pub data: BTreeMap<String, Vec<u8>>,
    pub checksum: String,
}

/// The complete, validated result of reading Vault.
#[derive(Debug, Default)]
pub struct Plan {
    pub secrets: Vec<Desired>,
    /// Listed but not found in Vault: their Secrets are left as they are.
    pub not_found: Vec<String>,
}

impl Plan {
    /// Every name the mapping still lists, found in Vault or not: what
    /// pruning keeps.
    pub fn names(&self) -> HashSet<&str> {
        self.secrets
            .iter()
            .map(|d| d.name.as_str())
            .chain(self.not_found.iter().map(String::as_str))
            .collect()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub not_found: usize,
    pub ignored: usize,
}

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
        let wait = interval.mul_f64(0.9 + 0.2 * crate::http::random_unit());
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

/// An item to read: Vault mount, path inside it, Secret name, annotation value.
struct Item {
    mount: KvMount,
    rel: String,
    name: String,
    vault_path: String,
}

/// Reads everything from Vault and validates it; no Kubernetes call.
pub fn plan(cfg: &SynchronizerConfig, vault: &VaultClient, token: &Secret) -> Result<Plan> {
    let mut items = Vec::new();
    for entry in &cfg.entries {
        let mount = vault
            .kv_mount(token, &entry.path)
            .map_err(|e| e.context(format!("entry {:?}", entry.raw)))?;
        let rel = mount.relative(&entry.path).to_string();
        match &entry.target {
            Target::Single { name } => items.push(Item {
                mount,
                rel,
                name: name.clone(),
                vault_path: entry.path.clone(),
            }),
            Target::Folder => {
                let keys = vault
                    .kv_list(token, &mount, &rel)
                    .map_err(|e| e.context(format!("entry {:?}", entry.raw)))?;
                for key in keys {
                    if key.ends_with('/') {
                        log::info(format!(
                            "skip sub-folder {}/{key} (only one level is synchronized)",
                            entry.path
                        ));
                        continue;
                    }
                    let child = if rel.is_empty() {
                        key.clone()
                    } else {
                        format!("{rel}/{key}")
                    };
                    items.push(Item {
                        mount: mount.clone(),
                        rel: child,
                        name: format!("{}{key}", cfg.prefix),
                        vault_path: format!("{}/{key}", entry.path),
                    });
                }
            }
        }
    }

    // Two items for one Secret (a folder key and an entry, or two
    // folders): the later wins, as the Go images wrote them in order.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        last.insert(&item.name, i);
    }
    let mut dropped = vec![false; items.len()];
    for (i, item) in items.iter().enumerate() {
        let later = last[item.name.as_str()];
        if later != i {
            dropped[i] = true;
            log::warn(format!(
                "{} and {} both give secret {}: the later ({}) is used, as in the Go images",
                item.vault_path, items[later].vault_path, item.name, items[later].vault_path
            ));
        }
    }
    let mut keep = dropped.iter().map(|d| !d);
    items.retain(|_| keep.next().unwrap_or(true));

    // Every name valid before any read result matters.
    let mut problems = Vec::new();
    for item in &items {
        if !mapping::is_dns_subdomain(&item.name) {
            problems.push(format!(
                "{}: invalid Secret name {:?} (lower-case RFC 1123 subdomain, at most 253 characters)",
                item.vault_path, item.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Other(format!(
            "invalid mapping: {}",
            problems.join("; ")
        )));
    }

    let results = parallel(&items, |item| {
        log::info(format!("read {} from vault", item.vault_path));
        vault.kv_read(token, &item.mount, &item.rel)
    });

    let mut plan = Plan::default();
    let mut errors = Vec::new();
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(Some(data)) => match to_secret_data(&data).and_then(|data| {
                if matches!(cfg.target, SyncTarget::Secrets(_)) {
                    api_limits(cfg, &item.vault_path, &data)?;
                }
                Ok(data)
            }) {
                Ok(data) => {
                    let checksum = checksum(&data);
                    plan.secrets.push(Desired {
                        name: item.name.clone(),
                        vault_path: item.vault_path.clone(),
                        data,
                        checksum,
                    });
                }
                Err(why) => errors.push(format!("{}: {why}", item.vault_path)),
            },
            Ok(None) => {
                log::warn(format!(
                    "vault secret {} not found (or its latest version is deleted); keeping secret {} as it is",
                    item.vault_path, item.name
                ));
                plan.not_found.push(item.name.clone());
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => errors.push(format!("read {}: {e}", item.vault_path)),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Other(format!(
            "nothing written: {}",
            errors.join("; ")
        )));
    }
    Ok(plan)
}

/// The largest total of a Secret's data values, in bytes, that the API
/// server stores (`MaxSecretSize`; `ValidateSecret` sums the decoded value
/// lengths, keys not counted).
pub const MAX_SECRET_DATA: usize = 1024 * 1024;
/// The largest total of an object's annotation keys and values
/// (`TotalAnnotationSizeLimitB` of `ValidateAnnotations`).
pub const MAX_ANNOTATIONS: usize = 256 * 1024;

/// What the API server would refuse about a Secret we are about to write,
/// checked in the plan so a refused value means nothing written. Names,
/// keys and labels are checked elsewhere (mapping, [`to_secret_data`],
/// config); this adds the sizes.
fn api_limits(
    cfg: &SynchronizerConfig,
    vault_path: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> std::result::Result<(), String> {
    let total: usize = data.values().map(Vec::len).sum();
    if total > MAX_SECRET_DATA {
        return Err(format!(
            "values total {total} bytes, more than the {MAX_SECRET_DATA} bytes (1 MiB) a Kubernetes Secret holds"
        ));
    }
    // Ours: the path annotation and the checksum (64 hex digits).
    let annotations = cfg.annotation.len() + vault_path.len() + CHECKSUM_ANNOTATION.len() + 64;
    if annotations > MAX_ANNOTATIONS {
        return Err(format!(
            "the annotations would total {annotations} bytes, more than the {MAX_ANNOTATIONS} Kubernetes allows"
        ));
    }
    Ok(())
}

/// Vault values to Secret bytes: strings as they are, `base64:` decoded,
/// anything else as compact JSON (the Go tool dropped those silently).
pub fn to_secret_data(
    data: &Map<String, Value>,
) -> std::result::Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for (key, value) in data {
        if !mapping::is_data_key(key) {
            return Err(format!(
                "invalid key {key:?} (allowed: letters, digits, - _ .)"
            ));
        }
        let bytes = match value {
            Value::String(s) => match s.strip_prefix("base64:") {
                Some(b64) => base64::decode(b64)
                    .ok_or_else(|| format!("key {key:?}: invalid base64 after \"base64:\""))?,
                None => s.clone().into_bytes(),
            },
            other => other.to_string().into_bytes(),
        };
        out.insert(key.clone(), bytes);
    }
    Ok(out)
}

pub fn checksum(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (k, v) in data {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        ctx.update(&(k.len() as u64).to_be_bytes());
        ctx.update(k.as_bytes());
        ctx.update(&(v.len() as u64).to_be_bytes());
        ctx.update(v);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `f` on every item with at most [`WORKERS`] threads; results in order.
pub(crate) fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item processed"))
        .collect()
}

enum Outcome {
    Created,
    Updated,
    Unchanged,
    Ignored,
}

fn is_managed(annotations: &BTreeMap<String, String>, cfg: &SynchronizerConfig) -> bool {
    annotations.contains_key(&cfg.annotation)
}

/// Our labels: `SYNCHRONIZER_LABELS` and [`MANAGED_LABEL`].
fn our_labels(cfg: &SynchronizerConfig) -> impl Iterator<Item = (&str, &str)> {
    cfg.labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([MANAGED_LABEL])
}

/// Whether the Secret needs no write: our annotations and labels are there
/// and its live data (`live`, `None` when unknown) is what Vault says.
fn up_to_date(
    meta: &SecretMeta,
    live: Option<&Data>,
    want: &Desired,
    cfg: &SynchronizerConfig,
) -> bool {
    meta.annotations.get(&cfg.annotation) == Some(&want.vault_path)
        && meta.annotations.get(CHECKSUM_ANNOTATION) == Some(&want.checksum)
        && our_labels(cfg).all(|(k, v)| meta.labels.get(k).map(String::as_str) == Some(v))
        && live == Some(&want.data)
}

/// Our checksum annotation is current but the data is not what we wrote:
/// someone edited the Secret by hand.
fn drifted(meta: &SecretMeta, live: Option<&Data>, want: &Desired) -> bool {
    meta.annotations.get(CHECKSUM_ANNOTATION) == Some(&want.checksum)
        && live.is_some_and(|d| d != &want.data)
}

fn encoded(data: &BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        data.iter()
            .map(|(k, v)| (k.clone(), Value::String(base64::encode(v))))
            .collect(),
    )
}

/// Applies the plan: one list call, then only the writes that change something.
pub fn apply(cfg: &SynchronizerConfig, kube: &KubeClient, plan: &Plan) -> Result<Summary> {
    let existing: HashMap<String, SecretMeta> = kube
        .list_secret_metadata()?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    // Data of the Secrets with our labels only, for drift repair; only
    // those we are about to compare are kept.
    let selector = our_labels(cfg)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let wanted: HashSet<&str> = plan.secrets.iter().map(|d| d.name.as_str()).collect();
    let live: HashMap<String, Option<Data>> = kube
        .list_secret_data(&selector)?
        .into_iter()
        .filter(|s| wanted.contains(s.name.as_str()))
        .map(|s| (s.name, s.data))
        .collect();

    let outcomes = parallel(&plan.secrets, |want| {
        let current = existing
            .get(&want.name)
            .map(|m| (m, live.get(&want.name).and_then(Option::as_ref)));
        apply_one(cfg, kube, current, want)
    });
    let mut summary = Summary {
        not_found: plan.not_found.len(),
        ..Summary::default()
    };
    let mut errors = Vec::new();
    for (want, outcome) in plan.secrets.iter().zip(outcomes) {
        match outcome {
            Ok(Outcome::Created) => summary.created += 1,
            Ok(Outcome::Updated) => summary.updated += 1,
            Ok(Outcome::Unchanged) => summary.unchanged += 1,
            Ok(Outcome::Ignored) => summary.ignored += 1,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => errors.push(format!("secret {}: {e}", want.name)),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Other(format!(
            "synchronization incomplete, nothing pruned: {}",
            errors.join("; ")
        )));
    }

    if cfg.prune {
        let keep = plan.names();
        let mut stale: Vec<&SecretMeta> = existing
            .values()
            .filter(|m| {
                is_managed(&m.annotations, cfg)
                    && !keep.contains(m.name.as_str())
                    // Our labels scope pruning: Secrets of another
                    // synchronizer sharing the annotation key but not our
                    // labels are not ours to delete.
                    && cfg.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v))
            })
            .collect();
        stale.sort_by(|a, b| a.name.cmp(&b.name));
        for meta in stale {
            kube.delete_secret(&meta.name, &meta.uid)
                .map_err(|e| e.context(format!("delete secret {}", meta.name)))?;
            log::info(format!("delete secret {}", meta.name));
            summary.deleted += 1;
        }
    }
    Ok(summary)
}

/// `current`: the Secret's metadata from the list and its data when the
/// labelled list had it.
fn apply_one(
    cfg: &SynchronizerConfig,
    kube: &KubeClient,
    current: Option<(&SecretMeta, Option<&Data>)>,
    want: &Desired,
) -> Result<Outcome> {
    match current {
        Some((m, _)) if !is_managed(&m.annotations, cfg) => {
            log::warn(format!(
                "ignoring secret {} - not managed by synchronizer",
                want.name
            ));
            return Ok(Outcome::Ignored);
        }
        Some((m, live)) if up_to_date(m, live, want, cfg) => return Ok(Outcome::Unchanged),
        Some(_) => {}
        None => {
            let mut annotations = Map::new();
            annotations.insert(cfg.annotation.clone(), want.vault_path.clone().into());
            annotations.insert(CHECKSUM_ANNOTATION.into(), want.checksum.clone().into());
            let labels: Map<String, Value> = our_labels(cfg)
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            let body = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": want.name,
                    "namespace": kube.namespace(),
                    "labels": labels,
                    "annotations": annotations,
                },
                "type": "Opaque",
                "data": encoded(&want.data),
            });
            if kube.create_secret(&body)? == Write::Done {
                log::info(format!(
                    "create secret {} from vault secret {}",
                    want.name, want.vault_path
                ));
                return Ok(Outcome::Created);
            }
            // AlreadyExists: another replica was faster; fall through to update.
        }
    }
    // Read, modify, write with resourceVersion; a conflict means someone
    // else wrote in between: read again.
    for _ in 0..5 {
        let Some(mut current) = kube.get_secret(&want.name)? else {
            return apply_one(cfg, kube, None, want);
        };
        let meta: SecretMeta =
            serde_json::from_value(current["metadata"].clone()).unwrap_or_default();
        if !is_managed(&meta.annotations, cfg) {
            log::warn(format!(
                "ignoring secret {} - not managed by synchronizer",
                want.name
            ));
            return Ok(Outcome::Ignored);
        }
        let data: BTreeMap<String, String> =
            serde_json::from_value(current["data"].clone()).unwrap_or_default();
        let live = crate::kube::decode_data(&data);
        if up_to_date(&meta, live.as_ref(), want, cfg) {
            return Ok(Outcome::Unchanged);
        }
        if drifted(&meta, live.as_ref(), want) {
            log::warn(format!(
                "secret {} was changed outside the synchronizer; restoring it from vault secret {}",
                want.name, want.vault_path
            ));
        }
        let md = current["metadata"]
            .as_object_mut()
            .ok_or_else(|| Error::Decode {
                context: format!("get secret {}", want.name),
                reason: "no metadata".into(),
            })?;
        let annotations = md.entry("annotations").or_insert_with(|| json!({}));
        annotations[&cfg.annotation] = want.vault_path.clone().into();
        annotations[CHECKSUM_ANNOTATION] = want.checksum.clone().into();
        let labels = md.entry("labels").or_insert_with(|| json!({}));
        for (k, v) in our_labels(cfg) {
            labels[k] = v.into();
        }
        current["data"] = encoded(&want.data);
        if let Some(obj) = current.as_object_mut() {
            obj.remove("stringData");
        }
        if kube.replace_secret(&want.name, &current)? == Write::Done {
            log::info(format!(
                "update secret {} from vault secret {}",
                want.name, want.vault_path
            ));
            return Ok(Outcome::Updated);
        }
    }
    Err(Error::Other(format!(
        "secret {} kept changing under us (5 conflicts in a row)",
        want.name
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_bytes_or_json() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"s":"text","b":"base64:aGk=","n":42,"t":true,"o":{"a":[1,"x"]},"z":null}"#,
        )
        .unwrap();
        let out = to_secret_data(&data).unwrap();
        assert_eq!(out["s"], b"text");
        assert_eq!(out["b"], b"hi");
        assert_eq!(out["n"], b"42");
        assert_eq!(out["t"], b"true");
        assert_eq!(out["o"], br#"{"a":[1,"x"]}"#);
        assert_eq!(out["z"], b"null");
    }

    #[test]
    fn bad_values_and_keys_are_refused() {
        let bad: Map<String, Value> = serde_json::from_str(r#"{"k":"base64:!!"}"#).unwrap();
        assert!(to_secret_data(&bad).unwrap_err().contains("base64"));
        let bad: Map<String, Value> = serde_json::from_str(r#"{"a/b":"x"}"#).unwrap();
        assert!(to_secret_data(&bad).unwrap_err().contains("invalid key"));
    }

    #[test]
    fn checksum_is_unambiguous() {
        let a = BTreeMap::from([("ab".to_string(), b"c".to_vec())]);
        let b = BTreeMap::from([("a".to_string(), b"bc".to_vec())]);
        assert_ne!(checksum(&a), checksum(&b));
        assert_eq!(checksum(&a).len(), 64);
    }
}

//! The Kubernetes Secrets sink: applies a [`Plan`] to the namespace's
//! Secrets, creating and updating only what changed and pruning only what
//! is ours.
//!
//! Managed Secrets carry the annotation `SYNCHRONIZER_ANNOTATION` (value:
//! the Vault path), `vault-kubernetes/sha256`, a digest of the data we
//! wrote, and the label `vault-kubernetes/managed=true`. A run decides from
//! two list calls: the metadata of the namespace's Secrets (what exists,
//! what is ours, what to prune) and the data of only the Secrets with our
//! label (drift: a hand-edited Secret is rewritten). Memory does not grow
//! with unrelated Secrets, and a no-op run writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::parallel::parallel;
use super::plan::{Desired, Plan, Summary, CHECKSUM_ANNOTATION};
use crate::base64;
use crate::config::SynchronizerConfig;
use crate::error::{Error, Result};
use crate::kube::{KubeClient, SecretMeta, Write};
use crate::log;

/// Label on every Secret we write, so one label-selected list returns the
/// data of ours and nothing else (an annotation cannot be selected on).
pub const MANAGED_LABEL: (&str, &str) = ("vault-kubernetes/managed", "true");
/// A Secret's data: key to bytes.
type Data = BTreeMap<String, Vec<u8>>;

enum Outcome {
    Created,
    Updated,
    Unchanged,
    Ignored,
}

pub(super) fn is_managed(annotations: &BTreeMap<String, String>, cfg: &SynchronizerConfig) -> bool {
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
                "type": want.secret_type,
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

//! The Kubernetes Secrets sink: applies a [`Plan`] to the namespace's
//! Secrets, creating and updating only what changed, and touching only
//! what is ours.
//!
//! Managed Secrets carry the annotation `SYNCHRONIZER_ANNOTATION` (value:
//! the Vault path), `vault-kubernetes/sha256`, a digest of the data we
//! wrote, the owner annotation and label of [`super::owner`], and the label
//! `vault-kubernetes/managed=true`. A run decides from two list calls: the
//! metadata of the namespace's Secrets (what exists, whose it is, what to
//! prune) and the digests of the data of only our own Secrets (drift: a
//! hand-edited Secret is rewritten), a page at a time. A no-op run writes
//! nothing; memory follows neither the namespace nor the data in it.
//!
//! Ownership: a Secret recording another synchronizer's identity is never
//! written or deleted: the run says so (a `WARNING:` naming both) and
//! fails, so an init container does not let its app start on another
//! synchronizer's credentials, while every other Secret is still written
//! and kept fresh. A Secret with our annotation key but no owner (written
//! by the Go images or by versions before ownership) is adopted once, when
//! its labels are ours and it comes from the same Vault path. Updates carry the resourceVersion of the object
//! they were decided on, deletes the uid and resourceVersion of the list.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::owner::{Identity, Rollout, OWNER_ANNOTATION, OWNER_LABEL, REVISION_ANNOTATION};
use super::plan::{checksum, Data, Desired, Plan, Reread, Summary, CHECKSUM_ANNOTATION};
use crate::base64;
use crate::config::SynchronizerConfig;
use crate::error::{Error, Result};
use crate::kube::{KubeClient, SecretMeta, Write};
use crate::log;
use crate::parallel::{parallel, parallel_n, LARGE_WORKERS};

/// Label on every Secret we write, so one label-selected list returns the
/// data of ours and nothing else (an annotation cannot be selected on).
pub const MANAGED_LABEL: (&str, &str) = ("vault-kubernetes/managed", "true");
enum Outcome {
    Created,
    Updated,
    /// Updated, after an edit outside the synchronizer.
    Repaired,
    Unchanged,
    Ignored,
    /// Owned by another synchronizer (named): left as it is.
    Taken(String),
}

/// Whose a Secret is, as this synchronizer sees it.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// Ours: it records our identity (or, without one, it is unowned and
    /// from the same Vault path, with our labels).
    Mine,
    /// Unowned, with our annotation key and labels, from the same Vault
    /// path: written by the Go images or an earlier version; ours once
    /// written.
    Adopt,
    /// Another synchronizer's, described.
    Theirs(String),
    /// Ours, last written by a pod of a newer rollout of our Deployment
    /// (its revision): left to it, never overwritten or pruned by us.
    Newer(u64),
    /// Without our annotation key: not a synchronizer's.
    NotManaged,
}

/// `vault_path`: where this synchronizer reads the Secret's data from.
fn claim(meta: &SecretMeta, vault_path: &str, cfg: &SynchronizerConfig, me: &Identity) -> Claim {
    let Some(path) = meta.annotations.get(&cfg.annotation) else {
        return Claim::NotManaged;
    };
    let labelled = cfg
        .labels
        .iter()
        .all(|(k, v)| meta.labels.get(k) == Some(v));
    // An unowned Secret is taken only for the very secret it holds: one
    // from another Vault path is another synchronizer's (one without an
    // identity, or a Go one still running); taking it would replace its
    // credentials with ours and, against a Go synchronizer, flap.
    let same_path = path.trim_matches('/') == vault_path.trim_matches('/');
    match (meta.annotations.get(OWNER_ANNOTATION), me) {
        (Some(owner), Identity::Known(id, mine)) if owner == id => match written_by(meta, mine) {
            Some(theirs) => Claim::Newer(theirs),
            None => Claim::Mine,
        },
        (Some(owner), _) => Claim::Theirs(owner.clone()),
        (None, Identity::Known(..)) if labelled && same_path => Claim::Adopt,
        (None, Identity::Unknown(_)) if labelled && same_path => Claim::Mine,
        (None, _) if !labelled => {
            Claim::Theirs("a synchronizer with other SYNCHRONIZER_LABELS".into())
        }
        (None, _) => Claim::Theirs(format!(
            "a synchronizer writing it from vault secret {path}"
        )),
    }
}

/// The revision of a newer rollout of our Deployment that last wrote a
/// Secret, if one did.
fn written_by(meta: &SecretMeta, mine: &Option<Rollout>) -> Option<u64> {
    mine.as_ref()?
        .newer(meta.annotations.get(REVISION_ANNOTATION)?)
}

/// Who a Secret with our annotation key belongs to, when that is not this
/// synchronizer (for the certificate claims of [`super::leased`], which
/// write on a Secret before the plan is applied): `None` when it is ours,
/// or ours to adopt, from the Vault path it records.
pub(super) fn owned_elsewhere(
    meta: &SecretMeta,
    cfg: &SynchronizerConfig,
    me: &Identity,
) -> Option<String> {
    let path = meta.annotations.get(&cfg.annotation)?;
    match claim(meta, path, cfg, me) {
        Claim::Theirs(owner) => Some(owner),
        Claim::Mine | Claim::Newer(_) | Claim::Adopt | Claim::NotManaged => None,
    }
}

/// Our labels: `SYNCHRONIZER_LABELS`, [`MANAGED_LABEL`] and the owner's.
fn our_labels(cfg: &SynchronizerConfig, me: &Identity) -> Vec<(String, String)> {
    let mut labels = cfg.labels.clone();
    labels.push((MANAGED_LABEL.0.into(), MANAGED_LABEL.1.into()));
    labels.extend(me.label().map(|l| (OWNER_LABEL.to_string(), l)));
    labels
}

/// Our annotations on a Secret holding data of this checksum.
fn our_annotations(
    cfg: &SynchronizerConfig,
    me: &Identity,
    want: &Desired,
    sum: &str,
) -> Vec<(String, String)> {
    let mut annotations = vec![
        (cfg.annotation.clone(), want.vault_path.clone()),
        (CHECKSUM_ANNOTATION.to_string(), sum.to_string()),
    ];
    if let Identity::Known(id, revision) = me {
        annotations.push((OWNER_ANNOTATION.to_string(), id.clone()));
        if let Some(rollout) = revision {
            annotations.push((REVISION_ANNOTATION.to_string(), rollout.annotation()));
        }
    }
    annotations
}

/// Whether the Secret needs no write: our annotations and labels are there
/// and the digest of its live data (`live`, `None` when unknown) is what
/// Vault says.
fn up_to_date(
    meta: &SecretMeta,
    live: Option<&str>,
    want: &Desired,
    cfg: &SynchronizerConfig,
    me: &Identity,
) -> bool {
    our_annotations(cfg, me, want, &want.checksum)
        .iter()
        .all(|(k, v)| meta.annotations.get(k) == Some(v))
        && our_labels(cfg, me)
            .iter()
            .all(|(k, v)| meta.labels.get(k) == Some(v))
        && live == Some(want.checksum.as_str())
}

/// Our checksum annotation is current but the data is not what we wrote:
/// someone edited the Secret by hand.
fn drifted(meta: &SecretMeta, live: Option<&str>, want: &Desired) -> bool {
    meta.annotations.get(CHECKSUM_ANNOTATION) == Some(&want.checksum)
        && live.is_some_and(|d| d != want.checksum)
}

/// Go's line for an existing Secret without our annotation.
fn newer(want: &Desired, theirs: u64, me: &Identity) -> Outcome {
    let mine = match me {
        Identity::Known(_, Some(r)) => r.revision.to_string(),
        _ => "?".into(),
    };
    log::info(format!(
        "secret {} was written by revision {theirs} of {}, newer than this pod's revision {mine}: left to it",
        want.name,
        me.describe()
    ));
    Outcome::Ignored
}

fn not_managed(want: &Desired) -> Outcome {
    log::warn(format!(
        "ignoring secret {} - not managed by synchronizer",
        want.name
    ));
    Outcome::Ignored
}

fn taken(want: &Desired, owner: String, me: &Identity) -> Outcome {
    log::warn(format!(
        "secret {} belongs to {owner}; this synchronizer ({}) maps it too, from vault secret {}, and leaves it as it is",
        want.name,
        me.describe(),
        want.vault_path
    ));
    Outcome::Taken(owner)
}

/// Applies the plan: two list calls, then only the writes that change
/// something, then, when `prune` (`cfg.prune`, unless the plan holds only
/// the leased entries of a run whose KV reads failed), the prune of our
/// own Secrets no longer mapped. Large
/// Secrets ([`Plan::is_large`]) are written with fewer workers, so memory
/// stays bounded whatever their size.
pub fn apply(
    cfg: &SynchronizerConfig,
    kube: &KubeClient,
    plan: &Plan,
    me: &Identity,
    reread: &Reread<'_>,
    prune: bool,
) -> Result<Summary> {
    let keep = [
        cfg.annotation.as_str(),
        CHECKSUM_ANNOTATION,
        OWNER_ANNOTATION,
        REVISION_ANNOTATION,
    ];
    let existing: HashMap<String, SecretMeta> = kube
        .list_secret_metadata(&keep)?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    // Digests of our own Secrets' data only, for drift repair.
    let selector = match me.label() {
        Some(label) => format!("{OWNER_LABEL}={label}"),
        None => format!("{}={},!{OWNER_LABEL}", MANAGED_LABEL.0, MANAGED_LABEL.1),
    };
    let wanted: HashSet<&str> = plan.secrets.iter().map(|d| d.name.as_str()).collect();
    let live: HashMap<String, Option<String>> = kube
        .list_secret_digests(&selector, &checksum)?
        .into_iter()
        .filter(|(name, _)| wanted.contains(name.as_str()))
        .collect();

    let one = |want: &&Desired| {
        let current = existing
            .get(&want.name)
            .map(|m| (m, live.get(&want.name).and_then(Option::as_deref)));
        apply_one(cfg, kube, current, want, me, plan, reread)
    };
    let (small, large): (Vec<&Desired>, Vec<&Desired>) =
        plan.secrets.iter().partition(|d| !plan.is_large(d));
    let outcomes = parallel(&small, one)
        .into_iter()
        .chain(parallel_n(&large, LARGE_WORKERS, one));
    let mut summary = Summary {
        not_found: plan.not_found.len(),
        ..Summary::default()
    };
    let mut errors = Vec::new();
    let mut theirs = Vec::new();
    for (want, outcome) in small.iter().chain(&large).zip(outcomes) {
        match outcome {
            Ok(Outcome::Created) => summary.created += 1,
            Ok(Outcome::Updated) => summary.updated += 1,
            Ok(Outcome::Repaired) => {
                summary.updated += 1;
                summary.repaired.push(want.name.clone());
            }
            Ok(Outcome::Unchanged) => summary.unchanged += 1,
            Ok(Outcome::Ignored) => summary.ignored += 1,
            Ok(Outcome::Taken(owner)) => {
                summary.ignored += 1;
                theirs.push(format!("{} (owned by {owner})", want.name));
            }
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

    if prune {
        summary.pruned = self::prune(cfg, kube, plan, me, &existing)?;
        summary.deleted = summary.pruned.len();
    }
    if !theirs.is_empty() {
        theirs.sort();
        return Err(Error::Other(format!(
            "not written, owned by another synchronizer: {} (give each Secret one synchronizer, or set SECRET_PREFIX)",
            theirs.join(", ")
        )));
    }
    Ok(summary)
}

/// Deletes our Secrets no longer mapped: those recording our identity
/// (never an unowned or another's one), each only as it was listed (uid
/// and resourceVersion): one changed since is kept. Returns their names.
fn prune(
    cfg: &SynchronizerConfig,
    kube: &KubeClient,
    plan: &Plan,
    me: &Identity,
    existing: &HashMap<String, SecretMeta>,
) -> Result<Vec<String>> {
    let Identity::Known(id, mine) = me else {
        return Ok(Vec::new());
    };
    let keep = plan.names();
    let mut stale: Vec<&SecretMeta> = existing
        .values()
        .filter(|m| {
            m.annotations.contains_key(&cfg.annotation)
                && m.annotations.get(OWNER_ANNOTATION) == Some(id)
                && !keep.contains(m.name.as_str())
        })
        .filter(|m| match written_by(m, mine) {
            // A newer rollout of our Deployment wrote it: its pods map it,
            // ours (about to be replaced) do not.
            Some(theirs) => {
                log::info(format!(
                    "secret {} was written by revision {theirs} of {id}, newer than this pod's: not pruned",
                    m.name
                ));
                false
            }
            None => true,
        })
        .collect();
    stale.sort_by(|a, b| a.name.cmp(&b.name));
    let mut deleted = Vec::new();
    for meta in stale {
        let done = kube
            .delete_secret(&meta.name, &meta.uid, &meta.resource_version)
            .map_err(|e| e.context(format!("delete secret {}", meta.name)))?;
        if done == Write::Conflict {
            log::warn(format!(
                "secret {} changed since it was listed (resourceVersion {}); not deleted",
                meta.name, meta.resource_version
            ));
            continue;
        }
        log::info(format!("delete secret {}", meta.name));
        deleted.push(meta.name.clone());
    }
    Ok(deleted)
}

/// `current`: the Secret's metadata from the list and the digest of its
/// data when our labelled list had it.
fn apply_one(
    cfg: &SynchronizerConfig,
    kube: &KubeClient,
    current: Option<(&SecretMeta, Option<&str>)>,
    want: &Desired,
    me: &Identity,
    plan: &Plan,
    reread: &Reread<'_>,
) -> Result<Outcome> {
    match current {
        Some((m, live)) => match claim(m, &want.vault_path, cfg, me) {
            Claim::NotManaged => return Ok(not_managed(want)),
            Claim::Theirs(owner) => return Ok(taken(want, owner, me)),
            Claim::Newer(theirs) => return Ok(newer(want, theirs, me)),
            Claim::Mine if up_to_date(m, live, want, cfg, me) => return Ok(Outcome::Unchanged),
            Claim::Mine | Claim::Adopt => {}
        },
        None => {
            let (data, sum) = reread.data(plan, want)?;
            let body = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": want.name,
                    "namespace": kube.namespace(),
                    "labels": as_map(our_labels(cfg, me)),
                    "annotations": as_map(our_annotations(cfg, me, want, &sum)),
                },
                "type": want.secret_type,
                "data": encoded(&data),
            });
            if kube.create_secret(&body)? == Write::Done {
                log::info(format!(
                    "create secret {} from vault secret {}",
                    want.name, want.vault_path
                ));
                return Ok(Outcome::Created);
            }
            // AlreadyExists: another replica was faster; decide again below.
        }
    }
    // Read, decide on what was read, write with its resourceVersion: a
    // conflict means someone wrote in between, so read and decide again.
    for _ in 0..5 {
        let Some(mut current) = kube.get_secret(&want.name)? else {
            return apply_one(cfg, kube, None, want, me, plan, reread);
        };
        let meta: SecretMeta =
            serde_json::from_value(current["metadata"].clone()).unwrap_or_default();
        let live = {
            let data: BTreeMap<String, String> =
                serde_json::from_value(current["data"].take()).unwrap_or_default();
            crate::kube::decode_data(&data).map(|d| checksum(&d))
        };
        let adopt = match claim(&meta, &want.vault_path, cfg, me) {
            Claim::NotManaged => return Ok(not_managed(want)),
            Claim::Theirs(owner) => return Ok(taken(want, owner, me)),
            Claim::Newer(theirs) => return Ok(newer(want, theirs, me)),
            Claim::Mine if up_to_date(&meta, live.as_deref(), want, cfg, me) => {
                return Ok(Outcome::Unchanged)
            }
            Claim::Mine => false,
            Claim::Adopt => true,
        };
        if adopt {
            log::info(format!(
                "adopt secret {} (written before synchronizers had owners) as {}",
                want.name,
                me.describe()
            ));
        }
        let repaired = !adopt && drifted(&meta, live.as_deref(), want);
        if repaired {
            log::warn(format!(
                "secret {} was changed outside the synchronizer; restoring it from vault secret {}",
                want.name, want.vault_path
            ));
        }
        let (data, sum) = reread.data(plan, want)?;
        let md = current["metadata"]
            .as_object_mut()
            .ok_or_else(|| Error::Decode {
                context: format!("get secret {}", want.name),
                reason: "no metadata".into(),
            })?;
        let annotations = md.entry("annotations").or_insert_with(|| json!({}));
        for (k, v) in our_annotations(cfg, me, want, &sum) {
            annotations[k] = v.into();
        }
        let labels = md.entry("labels").or_insert_with(|| json!({}));
        for (k, v) in our_labels(cfg, me) {
            labels[k] = v.into();
        }
        current["data"] = encoded(&data);
        drop(data);
        if let Some(obj) = current.as_object_mut() {
            obj.remove("stringData");
        }
        if kube.replace_secret(&want.name, &current)? == Write::Done {
            log::info(format!(
                "update secret {} from vault secret {}",
                want.name, want.vault_path
            ));
            return Ok(if repaired {
                Outcome::Repaired
            } else {
                Outcome::Updated
            });
        }
    }
    Err(Error::Other(format!(
        "secret {} kept changing under us (5 conflicts in a row)",
        want.name
    )))
}

fn as_map(pairs: Vec<(String, String)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k, v.into())).collect()
}

fn encoded(data: &Data) -> Value {
    Value::Object(
        data.iter()
            .map(|(k, v)| (k.clone(), Value::String(base64::encode(v))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn cfg(labels: &str) -> SynchronizerConfig {
        let env = Env::from_pairs([
            ("VAULT_TOKEN_PATH", "/t"),
            ("VAULT_SECRETS", "secret/a"),
            ("SYNCHRONIZER_TARGET_DIR", "/d"),
            ("SYNCHRONIZER_LABELS", labels),
        ]);
        SynchronizerConfig::from_env(&env).unwrap()
    }

    fn meta(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> SecretMeta {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        SecretMeta {
            name: "s".into(),
            annotations: map(annotations),
            labels: map(labels),
            ..SecretMeta::default()
        }
    }

    #[test]
    fn a_secret_is_ours_only_by_its_owner() {
        let want = Desired {
            name: "s".into(),
            vault_path: "secret/a".into(),
            data: Data::new(),
            checksum: String::new(),
            secret_type: "Opaque",
        };
        let (c, me) = (cfg("team=a"), Identity::Known("Deployment/a".into(), None));
        let none = Identity::Unknown("no pod".into());
        let owned = |o: &str| meta(&[("vault-secret", "secret/a"), (OWNER_ANNOTATION, o)], &[]);
        assert_eq!(
            claim(&owned("Deployment/a"), &want.vault_path, &c, &me),
            Claim::Mine
        );
        assert_eq!(
            claim(&owned("Deployment/b"), &want.vault_path, &c, &me),
            Claim::Theirs("Deployment/b".into())
        );
        // Without an identity, an owned Secret is never ours.
        assert!(matches!(
            claim(&owned("Deployment/a"), &want.vault_path, &c, &none),
            Claim::Theirs(_)
        ));
        // Unowned (Go, earlier versions): adopted with our labels only,
        // and only from the same Vault path.
        let legacy = |path: &str, team: &str| meta(&[("vault-secret", path)], &[("team", team)]);
        assert_eq!(
            claim(&legacy("secret/a", "a"), &want.vault_path, &c, &me),
            Claim::Adopt
        );
        assert!(matches!(
            claim(&legacy("secret/a", "b"), &want.vault_path, &c, &me),
            Claim::Theirs(_)
        ));
        assert_eq!(
            claim(&legacy("secret/x", "a"), &want.vault_path, &c, &me),
            Claim::Theirs("a synchronizer writing it from vault secret secret/x".into())
        );
        // Without an identity: only from the same Vault path.
        assert_eq!(
            claim(&legacy("secret/a", "a"), &want.vault_path, &c, &none),
            Claim::Mine
        );
        assert!(matches!(
            claim(&legacy("secret/x", "a"), &want.vault_path, &c, &none),
            Claim::Theirs(_)
        ));
        assert_eq!(
            claim(&meta(&[], &[]), &want.vault_path, &c, &me),
            Claim::NotManaged
        );
    }
}

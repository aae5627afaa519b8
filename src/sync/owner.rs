//! Who owns a synced Secret: the synchronizer's identity.
//!
//! Every Secret a synchronizer writes records its identity (annotation
//! [`OWNER_ANNOTATION`], and a digest of it in the label [`OWNER_LABEL`] so
//! one label-selected list returns the data of its own Secrets and nothing
//! else). A synchronizer updates and prunes only Secrets recording its own
//! identity; a Secret recording another is left alone with a warning
//! naming both (see [`super::secrets`]).
//!
//! The identity is, in this order:
//! 1. `SYNCHRONIZER_ID`, when set;
//! 2. the pod's controller, read from the API server: the Deployment of
//!    the pod's ReplicaSet (`Deployment/app`), the CronJob of its Job
//!    (`CronJob/backup`), else the controller itself (`StatefulSet/db`,
//!    `DaemonSet/agent`, `Job/x`), else the pod (`Pod/name`). Replicas of
//!    a Deployment, its pods across rollouts, and a CronJob's runs agree.
//!    Needs `get` on `pods` and `apps/replicasets` (and `batch/jobs` for
//!    pods of Jobs);
//! 3. none ([`Identity::Unknown`]) when neither can be had (the pod cannot
//!    be read, or no pod name): the safe mode. The synchronizer creates
//!    Secrets and updates only unowned ones written from the same Vault
//!    path with its labels, and prunes nothing.
//!
//! A Deployment's pods also carry their rollout's revision (the
//! ReplicaSet's `deployment.kubernetes.io/revision`, which the Deployment
//! controller raises on every rollout and rollback): during a rollout the
//! old and the new pods share the identity but may map different Secrets,
//! and each would otherwise prune what the other writes. A Secret records
//! the Deployment (uid) and revision that wrote it ([`REVISION_ANNOTATION`]);
//! a pod of an older revision of the same Deployment neither overwrites nor
//! prunes it (see [`super::secrets`]). A Deployment deleted and created
//! again has another uid and starts its revisions anew: its pods own the
//! Secrets as before, whatever revision the old one reached.

use serde_json::Value;

use crate::config::SynchronizerConfig;
use crate::error::{Error, Result};
use crate::kube::KubeClient;

/// Annotation naming the synchronizer that owns a Secret.
pub const OWNER_ANNOTATION: &str = "vault-kubernetes/owner";
/// Annotation with the [`Rollout`] of the pod that last wrote a Secret
/// (`<Deployment uid>/<revision>`); absent for other identities.
pub const REVISION_ANNOTATION: &str = "vault-kubernetes/revision";
/// The Deployment controller's revision annotation on a ReplicaSet.
const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
/// Label with a digest of [`OWNER_ANNOTATION`]'s value: label values are
/// at most 63 characters of a small alphabet, identities are not.
pub const OWNER_LABEL: &str = "vault-kubernetes/owner";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `SYNCHRONIZER_ID` or the pod's controller, e.g. `Deployment/app`;
    /// and, for a Deployment's pod, its rollout.
    Known(String, Option<Rollout>),
    /// Neither could be had; the reason, for the warning.
    Unknown(String),
}

impl Identity {
    /// The [`OWNER_LABEL`] value: the first 40 hex digits of the
    /// identity's SHA-256. `None` without an identity.
    pub fn label(&self) -> Option<String> {
        let Identity::Known(id, _) = self else {
            return None;
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        Some(
            digest.as_ref()[..20]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// For messages: the identity, or `no identity`.
    pub fn describe(&self) -> &str {
        match self {
            Identity::Known(id, _) => id,
            Identity::Unknown(_) => "no identity",
        }
    }
}

/// Which rollout of its Deployment a pod belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The Deployment's `metadata.uid`: revisions count per Deployment
    /// object, and start again at 1 when it is created anew.
    pub deployment_uid: String,
    /// The ReplicaSet's `deployment.kubernetes.io/revision`.
    pub revision: u64,
}

impl Rollout {
    /// The [`REVISION_ANNOTATION`] value.
    pub fn annotation(&self) -> String {
        format!("{}/{}", self.deployment_uid, self.revision)
    }

    /// Whether a Secret whose [`REVISION_ANNOTATION`] is `recorded` was
    /// written by a newer rollout of the same Deployment; its revision.
    pub fn newer(&self, recorded: &str) -> Option<u64> {
        let (uid, revision) = recorded.rsplit_once('/')?;
        let revision: u64 = revision.parse().ok()?;
        (uid == self.deployment_uid && revision > self.revision).then_some(revision)
    }
}

/// The identity of a synchronizer writing Secrets (see the module doc).
/// Errors only on what may pass (the API server unreachable, a 5xx): the
/// run fails and the next one tries again.
pub fn resolve(cfg: &SynchronizerConfig, kube: &KubeClient) -> Result<Identity> {
    if let Some(id) = &cfg.id {
        return Ok(Identity::Known(id.clone(), None));
    }
    let Some(pod) = &cfg.pod_name else {
        return Ok(Identity::Unknown(
            "no pod name (POD_NAME, or the host name)".into(),
        ));
    };
    let unknown = |why: String| Ok(Identity::Unknown(why));
    let pod_path = kube.namespaced("v1", &format!("pods/{pod}"));
    let object = match kube.get_object(&pod_path) {
        Ok(Some(object)) => object,
        Ok(None) => {
            return unknown(format!(
                "pod {pod} not found (set POD_NAME from metadata.name)"
            ))
        }
        Err(Error::Api { status: 403, .. }) => {
            return unknown(format!("not allowed to get pod {pod} (RBAC: get on pods)"))
        }
        Err(e) => return Err(e.context("read this pod's owner")),
    };
    let Some((kind, name)) = controller(&object) else {
        return Ok(Identity::Known(format!("Pod/{pod}"), None));
    };
    if kind == "Job" {
        return job_owner(kube, &name);
    }
    if kind != "ReplicaSet" {
        return Ok(Identity::Known(format!("{kind}/{name}"), None));
    }
    let rs_path = kube.namespaced("apps/v1", &format!("replicasets/{name}"));
    match kube.get_object(&rs_path) {
        Ok(Some(rs)) => Ok(match controller(&rs) {
            Some((kind, name)) if kind == "Deployment" => {
                Identity::Known(format!("{kind}/{name}"), rollout(&rs))
            }
            Some((kind, name)) => Identity::Known(format!("{kind}/{name}"), None),
            None => Identity::Known(format!("ReplicaSet/{name}"), None),
        }),
        Ok(None) => Err(Error::Other(format!(
            "read this pod's owner: replicaset {name} not found"
        ))),
        Err(Error::Api { status: 403, .. }) => unknown(format!(
            "not allowed to get replicaset {name} (RBAC: get on apps/replicasets)"
        )),
        Err(e) => Err(e.context("read this pod's owner")),
    }
}

/// The identity of a Job's pod: the Job's CronJob (`CronJob/backup`), as
/// each of its runs is another Job (`backup-29412345`) and would otherwise
/// find the Secrets of the previous run another synchronizer's; else the
/// Job. Without `get` on `batch/jobs` there is no telling: no identity
/// (the safe mode), with the RBAC to add in the reason.
fn job_owner(kube: &KubeClient, name: &str) -> Result<Identity> {
    let path = kube.namespaced("batch/v1", &format!("jobs/{name}"));
    match kube.get_object(&path) {
        Ok(Some(job)) => Ok(Identity::Known(
            match controller(&job) {
                Some((kind, name)) => format!("{kind}/{name}"),
                None => format!("Job/{name}"),
            },
            None,
        )),
        // A Job deleted under its running pod (orphaned): no CronJob left.
        Ok(None) => Ok(Identity::Known(format!("Job/{name}"), None)),
        Err(Error::Api { status: 403, .. }) => Ok(Identity::Unknown(format!(
            "not allowed to get job {name} (RBAC: get on batch/jobs, to tell a CronJob's runs apart from single Jobs)"
        ))),
        Err(e) => Err(e.context("read this pod's owner")),
    }
}

/// A Deployment's ReplicaSet's rollout; `None` when its revision is
/// absent or not a number (not made by the Deployment controller).
fn rollout(rs: &Value) -> Option<Rollout> {
    let revision = rs["metadata"]["annotations"][DEPLOYMENT_REVISION]
        .as_str()?
        .parse()
        .ok()?;
    let deployment_uid = rs["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == Value::Bool(true))?["uid"]
        .as_str()?
        .to_string();
    Some(Rollout {
        deployment_uid,
        revision,
    })
}

/// The controller of an object: `(kind, name)` of the owner reference
/// with `controller: true`.
fn controller(object: &Value) -> Option<(String, String)> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == Value::Bool(true))
        .and_then(|r| {
            Some((
                r["kind"].as_str()?.to_string(),
                r["name"].as_str()?.to_string(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_controller_is_the_owner_reference_marked_so() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"kind": "Other", "name": "x"},
            {"kind": "ReplicaSet", "name": "app-5d9c", "controller": true}]}});
        assert_eq!(
            controller(&pod),
            Some(("ReplicaSet".into(), "app-5d9c".into()))
        );
        assert_eq!(controller(&json!({"metadata": {}})), None);
    }

    #[test]
    fn the_label_is_a_valid_label_value_and_differs_by_identity() {
        let a = Identity::Known("Deployment/a".into(), None)
            .label()
            .unwrap();
        let b = Identity::Known("Deployment/b".into(), None)
            .label()
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 40);
        assert!(crate::mapping::is_label_value(&a));
        assert_eq!(Identity::Unknown("x".into()).label(), None);
        // The rollout is not part of the identity: every rollout agrees.
        let r = Rollout {
            deployment_uid: "u".into(),
            revision: 7,
        };
        assert_eq!(
            Identity::Known("Deployment/a".into(), Some(r)).label(),
            Some(a)
        );
    }

    #[test]
    fn a_rollout_is_newer_only_within_one_deployment_object() {
        let rs = json!({"metadata": {
            "annotations": {DEPLOYMENT_REVISION: "12"},
            "ownerReferences": [{"kind": "Deployment", "name": "app", "uid": "u1", "controller": true}]}});
        let r = rollout(&rs).unwrap();
        assert_eq!((r.deployment_uid.as_str(), r.revision), ("u1", 12));
        assert_eq!(r.annotation(), "u1/12");
        assert_eq!(r.newer("u1/13"), Some(13));
        assert_eq!(r.newer("u1/12"), None);
        assert_eq!(r.newer("u1/3"), None);
        // Another Deployment object of the same name (deleted, created
        // again): its revisions say nothing about ours.
        assert_eq!(r.newer("u0/40"), None);
        assert_eq!(r.newer("garbage"), None);
        let odd = json!({"metadata": {"annotations": {DEPLOYMENT_REVISION: "x"}}});
        assert_eq!(rollout(&odd), None);
    }
}

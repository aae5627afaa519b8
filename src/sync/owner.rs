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

use serde_json::Value;

use crate::config::SynchronizerConfig;
use crate::error::{Error, Result};
use crate::kube::KubeClient;

/// Annotation naming the synchronizer that owns a Secret.
pub const OWNER_ANNOTATION: &str = "vault-kubernetes/owner";
/// Label with a digest of [`OWNER_ANNOTATION`]'s value: label values are
/// at most 63 characters of a small alphabet, identities are not.
pub const OWNER_LABEL: &str = "vault-kubernetes/owner";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `SYNCHRONIZER_ID` or the pod's controller, e.g. `Deployment/app`.
    Known(String),
    /// Neither could be had; the reason, for the warning.
    Unknown(String),
}

impl Identity {
    /// The [`OWNER_LABEL`] value: the first 40 hex digits of the
    /// identity's SHA-256. `None` without an identity.
    pub fn label(&self) -> Option<String> {
        let Identity::Known(id) = self else {
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
            Identity::Known(id) => id,
            Identity::Unknown(_) => "no identity",
        }
    }
}

/// The identity of a synchronizer writing Secrets (see the module doc).
/// Errors only on what may pass (the API server unreachable, a 5xx): the
/// run fails and the next one tries again.
pub fn resolve(cfg: &SynchronizerConfig, kube: &KubeClient) -> Result<Identity> {
    if let Some(id) = &cfg.id {
        return Ok(Identity::Known(id.clone()));
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
        return Ok(Identity::Known(format!("Pod/{pod}")));
    };
    if kind == "Job" {
        return job_owner(kube, &name);
    }
    if kind != "ReplicaSet" {
        return Ok(Identity::Known(format!("{kind}/{name}")));
    }
    let rs_path = kube.namespaced("apps/v1", &format!("replicasets/{name}"));
    match kube.get_object(&rs_path) {
        Ok(Some(rs)) => Ok(Identity::Known(match controller(&rs) {
            Some((kind, name)) => format!("{kind}/{name}"),
            None => format!("ReplicaSet/{name}"),
        })),
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
        Ok(Some(job)) => Ok(Identity::Known(match controller(&job) {
            Some((kind, name)) => format!("{kind}/{name}"),
            None => format!("Job/{name}"),
        })),
        // A Job deleted under its running pod (orphaned): no CronJob left.
        Ok(None) => Ok(Identity::Known(format!("Job/{name}"))),
        Err(Error::Api { status: 403, .. }) => Ok(Identity::Unknown(format!(
            "not allowed to get job {name} (RBAC: get on batch/jobs, to tell a CronJob's runs apart from single Jobs)"
        ))),
        Err(e) => Err(e.context("read this pod's owner")),
    }
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
        let a = Identity::Known("Deployment/a".into()).label().unwrap();
        let b = Identity::Known("Deployment/b".into()).label().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 40);
        assert!(crate::mapping::is_label_value(&a));
        assert_eq!(Identity::Unknown("x".into()).label(), None);
    }
}

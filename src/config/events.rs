//! Settings of the Events the long-running programs record on their own
//! pod (docs/events.md): the pod from the downward API (`POD_NAME`,
//! `POD_NAMESPACE`, `POD_UID`) and the API server as for Secrets.

use super::{Env, KubeSettings};
use crate::mapping;

/// Where Events go. Present only when `POD_NAME` is set.
#[derive(Clone, Debug)]
pub struct EventSettings {
    /// `POD_NAME` (downward API `metadata.name`): the pod the Events are
    /// about, also their `reportingInstance`.
    pub pod_name: String,
    /// `POD_UID` (`metadata.uid`): `kubectl describe pod` lists only the
    /// Events that carry the pod's uid.
    pub pod_uid: Option<String>,
    /// The program, as `reportingController` (a Kubernetes qualified name).
    pub controller: &'static str,
    /// The API server, and the namespace of the pod and of its Events.
    pub kube: KubeSettings,
}

impl EventSettings {
    /// `None` without `POD_NAME`. Events are optional: what turns them off
    /// (an invalid name, no way to the API server) is a warning pushed to
    /// `warnings`, never an error. `kube`: the program's own settings, if
    /// it has them already.
    pub fn from_env(
        env: &Env,
        controller: &'static str,
        kube: Option<&KubeSettings>,
        warnings: &mut Vec<String>,
    ) -> Option<Self> {
        let pod_name = env.string("POD_NAME")?;
        if !mapping::is_dns_subdomain(&pod_name) {
            warnings.push(format!(
                "Events are off: POD_NAME: invalid pod name {pod_name:?}"
            ));
            return None;
        }
        let kube = match kube {
            Some(k) => k.clone(),
            None => match KubeSettings::from_env(env) {
                Ok(k) => k,
                Err(e) => {
                    warnings.push(format!("Events are off: {e}"));
                    return None;
                }
            },
        };
        let pod_uid = env.string("POD_UID");
        if pod_uid.is_none() {
            warnings.push(
                "POD_UID is not set: kubectl describe pod will not list this pod's Events (set it from the downward API, metadata.uid)"
                    .to_string(),
            );
        }
        Some(EventSettings {
            pod_name,
            pod_uid,
            controller,
            kube,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> (Option<EventSettings>, Vec<String>) {
        let mut warnings = Vec::new();
        let env = Env::from_pairs(pairs.iter().copied());
        let s = EventSettings::from_env(&env, "vault-kubernetes-synchronizer", None, &mut warnings);
        (s, warnings)
    }

    #[test]
    fn off_without_pod_name_and_never_an_error() {
        let (s, w) = settings(&[("POD_NAMESPACE", "ns")]);
        assert!(s.is_none() && w.is_empty());
        let (s, w) = settings(&[("POD_NAME", "Not_A_Pod"), ("POD_NAMESPACE", "ns")]);
        assert!(s.is_none());
        assert!(w[0].contains("POD_NAME"), "{w:?}");
        // No API server: a warning, not a configuration error.
        let (s, w) = settings(&[("POD_NAME", "app-0"), ("POD_NAMESPACE", "ns")]);
        assert!(s.is_none());
        assert!(w[0].contains("KUBERNETES_SERVICE_HOST"), "{w:?}");
    }

    #[test]
    fn the_pod_from_the_downward_api() {
        let (s, w) = settings(&[
            ("POD_NAME", "app-0"),
            ("POD_NAMESPACE", "ns"),
            ("POD_UID", "0b7c"),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ]);
        let s = s.unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.pod_name, "app-0");
        assert_eq!(s.pod_uid.as_deref(), Some("0b7c"));
        assert_eq!(s.kube.namespace, "ns");
        let (s, w) = settings(&[
            ("POD_NAME", "app-0"),
            ("POD_NAMESPACE", "ns"),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ]);
        assert!(s.unwrap().pod_uid.is_none());
        assert!(w[0].contains("POD_UID"), "{w:?}");
    }
}

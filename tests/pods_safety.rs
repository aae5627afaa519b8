//! Synchronizer ownership in real pods on the single-node cluster of
//! `scripts/stack.sh up --cluster`: two Deployments of synchronizer
//! sidecars with the default configuration (no SYNCHRONIZER_ID, no labels)
//! and different `VAULT_SECRETS`, in one namespace, each every 2 s. Each
//! takes its identity from its pod's Deployment (the pod name from the
//! downward API: these pods use the host's network, so their host name is
//! the node's); the two replicas of one agree. Both sets of Secrets stay,
//! unchanged, and no log says `delete`.
//!
//! Network: as tests/pods.rs (host network, the API server's loopback
//! address, logs from the kubelet's log directory).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::*;
use support::*;
use vault_kubernetes::http::Method;

/// Authenticator, then the synchronizer as a sidecar every 2 s, under the
/// demo's 64 MiB limit; the pod's name from the downward API.
fn deployment(pod: &Pod, name: &str, replicas: u32, secrets: &str) -> Value {
    let pod_name =
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}});
    let mut sync_env = env(pod, &[("VAULT_SECRETS", secrets), ("SYNC_INTERVAL", "2s")]);
    sync_env.as_array_mut().unwrap().push(pod_name);
    let mut sync = container("synchronizer", &image("synchronizer"), sync_env);
    sync["resources"] = json!({"limits": {"memory": "64Mi"}});
    let labels = json!({"app": name});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "app",
                "hostNetwork": true,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 5,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "initContainers": [container("authenticator", &image("authenticator"), env(pod, &[]))],
                "containers": [sync],
                "volumes": [{"name": "vault-token", "emptyDir": {"medium": "Memory"}}],
            }}}
    })
}

/// The synchronizer containers' log lines of every pod of Deployment `name`.
fn logs(pod: &Pod, name: &str) -> String {
    let pods = cluster().kube(
        Method::Get,
        &format!(
            "/api/v1/namespaces/{}/pods?labelSelector=app%3D{name}",
            pod.namespace
        ),
        None,
    );
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .map(|p| container_log(pod, p, "synchronizer"))
        .collect()
}

/// Name and resourceVersion of every Secret of the namespace.
fn secrets(pod: &Pod) -> Vec<(String, String)> {
    let list = cluster().kube(
        Method::Get,
        &format!("/api/v1/namespaces/{}/secrets", pod.namespace),
        None,
    );
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap_or("").to_string(),
                i["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_deployments_of_sidecars_in_one_namespace_keep_both_sets() {
    let s = cluster();
    let base = unique("kvp");
    let policy = format!("p-{base}");
    s.policy(
        &policy,
        &format!(
            "path \"secret/data/{base}/*\" {{ capabilities = [\"read\"] }}\n\
             path \"secret/metadata/{base}/*\" {{ capabilities = [\"list\"] }}\n"
        ),
    );
    let policies = [policy.as_str()];
    let pod = Pod::new(RoleOptions {
        policies: &policies,
        ..Default::default()
    });
    let ns = pod.namespace.clone();
    // What the default identity needs (demo/manifests/00-rbac.yaml has the same).
    s.kube(
        Method::Post,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        Some(json!({
        "apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"identity"},
        "rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},
                 {"apiGroups":["apps"],"resources":["replicasets"],"verbs":["get"]}]})),
    );
    s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"), Some(json!({
        "apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"identity"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"identity"},
        "subjects":[{"kind":"ServiceAccount","name":"app","namespace":ns}]})));
    for i in 0..2 {
        s.kv_put(
            "secret",
            &format!("{base}/a/a{i}"),
            json!({"v": format!("a{i}")}),
        );
        s.kv_put(
            "secret",
            &format!("{base}/b/b{i}"),
            json!({"v": format!("b{i}")}),
        );
    }
    let deployments = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    s.kube(
        Method::Post,
        &deployments,
        Some(deployment(&pod, "sync-a", 2, &format!("secret/{base}/a/"))),
    );
    s.kube(
        Method::Post,
        &deployments,
        Some(deployment(&pod, "sync-b", 1, &format!("secret/{base}/b/"))),
    );

    let names = |list: &[(String, String)]| -> Vec<String> {
        list.iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !n.starts_with("audit-marker"))
            .collect()
    };
    let all = ["a0", "a1", "b0", "b1"];
    let up = wait_until(Duration::from_secs(120), || {
        names(&secrets(&pod)) == all
            && ["sync-a", "sync-b"]
                .iter()
                .all(|d| logs(&pod, d).contains("secrets successfully synchronized"))
    });
    let first = secrets(&pod);
    // A few intervals of both sidecars (each would have deleted the other's
    // set every 2 s before ownership).
    let until = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < until {
        seen.push(secrets(&pod));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (log_a, log_b) = (logs(&pod, "sync-a"), logs(&pod, "sync-b"));
    s.kube(
        Method::Delete,
        &format!("{deployments}/sync-a"),
        Some(json!({"propagationPolicy": "Background"})),
    );
    s.kube(
        Method::Delete,
        &format!("{deployments}/sync-b"),
        Some(json!({"propagationPolicy": "Background"})),
    );

    assert!(
        up,
        "both sets never there: {:?}\n--- a\n{log_a}\n--- b\n{log_b}",
        secrets(&pod)
    );
    for snapshot in &seen {
        assert_eq!(
            snapshot, &first,
            "a Secret changed or went: --- a\n{log_a}\n--- b\n{log_b}"
        );
    }
    for (who, log) in [("a", &log_a), ("b", &log_b)] {
        assert!(!log.contains("delete secret"), "{who}: {log}");
        assert!(
            log.contains(&format!("synchronizer identity: Deployment/sync-{who}")),
            "{who}: {log}"
        );
    }
    let owner = |name: &str| {
        cluster().kube(
            Method::Get,
            &format!("/api/v1/namespaces/{ns}/secrets/{name}"),
            None,
        )["metadata"]["annotations"]["vault-kubernetes/owner"]
            .clone()
    };
    assert_eq!(owner("a1"), "Deployment/sync-a");
    assert_eq!(owner("b0"), "Deployment/sync-b");
}

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
use support::cluster::{cluster, image, TOKEN_PATH};
use support::*;
use vault_kubernetes::http::Method;

/// A restricted container of ours with the pod's token volume.
fn container(name: &str, program: &str, env: Value) -> Value {
    json!({
        "name": name, "image": image(program), "imagePullPolicy": "Never", "env": env,
        "volumeMounts": [{"name": "vault-token", "mountPath": "/home/vault"}],
        "resources": {"limits": {"memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
    })
}

/// Authenticator, then the synchronizer as a sidecar every 2 s.
fn deployment(pod: &Pod, name: &str, replicas: u32, secrets: &str) -> Value {
    let s = cluster();
    let vars = |extra: &[(&str, &str)]| -> Value {
        let mut v: Vec<Value> = [
            ("VAULT_ADDR", s.get("VAULT_ADDR")),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", s.get("KUBERNETES_SERVICE_PORT")),
            ("VAULT_ROLE", pod.role.as_str()),
            ("VAULT_TOKEN_PATH", TOKEN_PATH),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
        v.push(
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        );
        Value::Array(v)
    };
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
                "initContainers": [container("authenticator", "authenticator", vars(&[]))],
                "containers": [container("synchronizer", "synchronizer",
                    vars(&[("VAULT_SECRETS", secrets), ("SYNC_INTERVAL", "2s")]))],
                "volumes": [{"name": "vault-token", "emptyDir": {"medium": "Memory"}}],
            }}}
    })
}

/// The synchronizer containers' log lines of every pod of Deployment `name`.
fn logs(pod: &Pod, name: &str) -> String {
    let dir = std::path::Path::new(cluster().get("VK_POD_LOGS_DIR"));
    let prefix = format!("{}_{name}-", pod.namespace);
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for f in std::fs::read_dir(e.path().join("synchronizer"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for line in std::fs::read_to_string(f.path())
                .unwrap_or_default()
                .lines()
            {
                out.push_str(line.splitn(4, ' ').nth(3).unwrap_or(line));
                out.push('\n');
            }
        }
    }
    out
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

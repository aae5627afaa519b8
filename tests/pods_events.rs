//! Failures where Kubernetes users look (docs/events.md), in real pods on
//! the single-node cluster: the termination message of a failed init
//! container.
//!
//! Network as in tests/pods.rs: host network, the API server by its
//! loopback address, container logs read from the kubelet's pod log
//! directory (never `kubectl logs`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
// support::cluster::container leaves the termination message policy at its
// default (`File`), so a message can only come from the program.
use support::cluster::{cluster, container, image, TOKEN_PATH};
use support::*;
use vault_kubernetes::http::Method;

/// The container environment: OpenBao, the API server by its loopback
/// address, the role, the token file and the downward-API variables.
fn env(pod: &Pod, extra: &[(&str, &str)]) -> Value {
    let s = cluster();
    let mut vars = vec![
        json!({"name": "VAULT_ADDR", "value": s.get("VAULT_ADDR")}),
        json!({"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}),
        json!({"name": "KUBERNETES_SERVICE_PORT", "value": s.get("KUBERNETES_SERVICE_PORT")}),
        json!({"name": "VAULT_ROLE", "value": pod.role}),
        json!({"name": "VAULT_TOKEN_PATH", "value": TOKEN_PATH}),
    ];
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ] {
        vars.push(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}));
    }
    for (k, v) in extra {
        vars.retain(|e| e["name"] != *k);
        vars.push(json!({"name": k, "value": v}));
    }
    Value::Array(vars)
}

fn pod_spec(init: Vec<Value>, containers: Vec<Value>, restart: &str) -> Value {
    json!({
        "serviceAccountName": "app",
        "hostNetwork": true,
        "enableServiceLinks": false,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                            "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": init,
        "containers": containers,
        "volumes": [{"name": "vault-token", "emptyDir": {"medium": "Memory"}}],
    })
}

fn create_pod(pod: &Pod, name: &str, spec: Value) {
    cluster().kube(
        Method::Post,
        &format!("/api/v1/namespaces/{}/pods", pod.namespace),
        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})),
    );
}

fn get_pod(pod: &Pod, name: &str) -> Value {
    cluster()
        .try_kube(
            Method::Get,
            &format!("/api/v1/namespaces/{}/pods/{name}", pod.namespace),
            None,
        )
        .unwrap_or(Value::Null)
}

fn delete_pod(pod: &Pod, name: &str) {
    let _ = cluster().try_kube(
        Method::Delete,
        &format!("/api/v1/namespaces/{}/pods/{name}", pod.namespace),
        None,
    );
}

/// Polls until `done` gives a value; panics with the pod's status and logs after `secs`.
fn wait_for<T>(pod: &Pod, name: &str, secs: u64, done: impl Fn(&Value) -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = get_pod(pod, name);
        if let Some(v) = done(&p) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "pod {name}: nothing after {secs}s: {:#}\nlogs: {}",
            p["status"],
            container_log(pod, name, "")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A container's log (every container's with `container` empty) from the
/// kubelet's pod log directory, without the CRI prefix.
fn container_log(pod: &Pod, name: &str, container: &str) -> String {
    let dir = std::path::Path::new(cluster().get("VK_POD_LOGS_DIR"));
    let prefix = format!("{}_{name}_", pod.namespace);
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for c in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            if !container.is_empty() && c.file_name() != container {
                continue;
            }
            let mut files: Vec<_> = std::fs::read_dir(c.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| f.path())
                .collect();
            files.sort();
            for f in files {
                for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                    out.push_str(line.splitn(4, ' ').nth(3).unwrap_or(line));
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn a_failing_authenticator_leaves_its_error_as_termination_message() {
    let pod = Pod::new(RoleOptions::default());
    let auth = container(
        "vault-authenticator",
        &image("authenticator"),
        env(
            &pod,
            &[("VAULT_ROLE", "no-such-role"), ("LOGIN_TIMEOUT", "2s")],
        ),
    );
    let app = container("app", cluster().get("VK_PAUSE_IMAGE"), json!([]));
    // Restarted as in a Deployment: the failure is kept in lastState.
    create_pod(
        &pod,
        "auth-fails",
        pod_spec(vec![auth], vec![app], "Always"),
    );
    let message = wait_for(&pod, "auth-fails", 120, |p| {
        p["status"]["initContainerStatuses"][0]["lastState"]["terminated"]["message"]
            .as_str()
            .map(str::to_string)
    });
    let status = get_pod(&pod, "auth-fails")["status"]["initContainerStatuses"][0].clone();
    delete_pod(&pod, "auth-fails");
    record_status(&message);
    assert_eq!(
        status["lastState"]["terminated"]["exitCode"], 1,
        "{status:#}"
    );
    assert!(message.contains("no-such-role"), "{message}");
    // The program's line without the log's timestamp: from the file, not
    // from the log (the policy is File, not FallbackToLogsOnError).
    assert!(!message.starts_with("20"), "{message}");
    let log = container_log(&pod, "auth-fails", "vault-authenticator");
    assert!(
        log.lines().any(|l| l.ends_with(&message)),
        "{message}\n{log}"
    );
    // No JWT in it (tokens of every shape: the log scan, which reads it too).
    assert!(!message.contains("eyJ"), "{message}");
}

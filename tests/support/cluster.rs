//! Helpers for the tests on the single-node cluster (`tests/pods*.rs`,
//! `scripts/stack.sh up --cluster`): pods of restricted containers on the
//! host's network, their status, and container logs read from the
//! kubelet's pod log directory (never `kubectl logs`: nothing dials the
//! node's address).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_kubernetes::http::Method;

use super::{stack, Pod, Stack};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const TOKEN_PATH: &str = "/home/vault/token";

pub fn cluster() -> &'static Stack {
    let s = stack();
    assert_eq!(
        s.env.get("VK_CLUSTER").map(String::as_str),
        Some("1"),
        "these tests need the single-node cluster: scripts/stack.sh up --cluster"
    );
    s
}

pub fn image(program: &str) -> String {
    format!("localhost/vault-kubernetes-{program}:{VERSION}")
}

pub fn busybox() -> String {
    cluster().get("VK_SHELL_IMAGE").to_string()
}

/// What every container of ours gets: the stack's OpenBao, the API server
/// by its loopback address, the role and the shared token file.
pub fn env(pod: &Pod, extra: &[(&str, &str)]) -> Value {
    let s = cluster();
    let mut vars = vec![
        ("VAULT_ADDR", s.get("VAULT_ADDR")),
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", s.get("KUBERNETES_SERVICE_PORT")),
        ("VAULT_ROLE", pod.role.as_str()),
        ("VAULT_TOKEN_PATH", TOKEN_PATH),
    ];
    for (k, v) in extra {
        vars.retain(|(n, _)| n != k);
        vars.push((k, v));
    }
    vars.iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect()
}

/// A restricted container: non-root, no capabilities, read-only root.
pub fn container(name: &str, image: &str, env: Value) -> Value {
    json!({
        "name": name, "image": image, "imagePullPolicy": "Never", "env": env,
        "volumeMounts": [{"name": "vault-token", "mountPath": "/home/vault"}],
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
    })
}

/// A shell step in the app image, run as `uid` (65534 unless given).
pub fn shell(name: &str, uid: Option<u32>, script: &str) -> Value {
    let mut c = container(name, &busybox(), json!([]));
    c["command"] = json!(["/bin/sh", "-c", script]);
    if let Some(uid) = uid {
        c["securityContext"]["runAsUser"] = json!(uid);
    }
    c
}

/// A pod spec on the host's network with the pod's token volume in memory.
pub fn pod_spec(init: Vec<Value>, containers: Vec<Value>) -> Value {
    json!({
        "serviceAccountName": "app",
        "hostNetwork": true,
        "enableServiceLinks": false,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                            "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": init,
        "containers": containers,
        "volumes": [{"name": "vault-token", "emptyDir": {"medium": "Memory"}}],
    })
}

pub fn create_pod(pod: &Pod, name: &str, spec: Value) -> String {
    let created = cluster().kube(
        Method::Post,
        &format!("/api/v1/namespaces/{}/pods", pod.namespace),
        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})),
    );
    created["metadata"]["uid"].as_str().unwrap().to_string()
}

pub fn get_pod(pod: &Pod, name: &str) -> Option<Value> {
    cluster()
        .try_kube(
            Method::Get,
            &format!("/api/v1/namespaces/{}/pods/{name}", pod.namespace),
            None,
        )
        .ok()
}

/// Polls the pod until `done` holds; panics with its status after `secs`.
pub fn wait_pod(pod: &Pod, name: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = get_pod(pod, name).unwrap_or(Value::Null);
        if done(&p) {
            return p;
        }
        assert!(
            Instant::now() < end,
            "pod {name} not there after {secs}s: {:#}\nlogs: {}",
            p["status"],
            all_logs(pod, name)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

/// A container's log lines from the kubelet's pod log directory, without
/// the CRI prefix (`<time> <stream> <P|F> `).
pub fn container_log(pod: &Pod, name: &str, container: &str) -> String {
    let dir = std::path::Path::new(cluster().get("VK_POD_LOGS_DIR"));
    let prefix = format!("{}_{name}_", pod.namespace);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut out = String::new();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(e.path().join(container))
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
    out
}

pub fn all_logs(pod: &Pod, name: &str) -> String {
    let dir = std::path::Path::new(cluster().get("VK_POD_LOGS_DIR"));
    let prefix = format!("{}_{name}_", pod.namespace);
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            for c in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let c = c.file_name().to_string_lossy().into_owned();
                out += &format!("\n--- {c}\n{}", container_log(pod, name, &c));
            }
        }
    }
    out
}

/// OpenBao's audit responses for `path` made with a token of this namespace.
pub fn audited(pod: &Pod, path: &str) -> usize {
    let log = std::fs::read_to_string(cluster().get("VK_VAULT_AUDIT_LOG")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "response" && e["request"]["path"] == path)
        .filter(|e| e["auth"]["metadata"]["service_account_namespace"] == pod.namespace.as_str())
        .count()
}

/// Accessors of the live tokens issued to this namespace's service account.
pub fn accessors(pod: &Pod) -> Vec<String> {
    let s = cluster();
    let list = s.vault(Method::Get, "auth/token/accessors?list=true", None);
    list["data"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|a| {
            s.try_vault(
                Method::Post,
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": a })),
            )
            .is_ok_and(|v| v["data"]["meta"]["service_account_namespace"] == pod.namespace.as_str())
        })
        .map(str::to_string)
        .collect()
}

/// Vault's JWT auth method at the mount `jwt`, validating the cluster's
/// service-account tokens with the issuer's public key (no TokenReview,
/// no API server access), and a role named after `pod`'s for its service
/// account, with the audience `vault`.
pub fn jwt_role(pod: &Pod) {
    let s = cluster();
    if s.try_vault(Method::Get, "sys/auth/jwt", None).is_err() {
        let _ = s.try_vault(Method::Post, "sys/auth/jwt", Some(json!({"type": "jwt"})));
        let key = std::fs::read_to_string(s.get("VK_SA_PUBLIC_KEY")).unwrap();
        s.vault(
            Method::Post,
            "auth/jwt/config",
            Some(json!({"jwt_validation_pubkeys": [key]})),
        );
    }
    s.vault(
        Method::Post,
        &format!("auth/jwt/role/{}", pod.role),
        Some(json!({
            "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
            "bound_subject": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
            "token_policies": ["vk-demo"], "token_ttl": "1h",
        })),
    );
}

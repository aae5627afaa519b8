//! Leased secrets in a real pod on the single-node cluster: the
//! synchronizer as a native sidecar delivers database credentials and a
//! certificate to a memory volume; the app (psql and openssl, the image
//! scripts/setup.sh builds) connects and verifies; deleting the pod revokes
//! the leases: the PostgreSQL role is gone from `pg_roles` and the
//! certificate's lease from OpenBao.
//!
//! Network: the pod uses the host's network and loopback addresses only;
//! container logs are read from the kubelet's pod log directory.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{cluster, VERSION};
use support::*;
use vault_kubernetes::http::Method;

fn container(name: &str, image: &str, env: &[(&str, &str)], mounts: Value) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "name": name, "image": image, "imagePullPolicy": "Never", "env": env,
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
    })
}

/// A container's log lines (kubelet pod log directory, CRI prefix dropped).
fn container_log(pod: &Pod, name: &str, container: &str) -> String {
    let dir = std::path::Path::new(cluster().get("VK_POD_LOGS_DIR"));
    let prefix = format!("{}_{name}_", pod.namespace);
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            for f in std::fs::read_dir(e.path().join(container))
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
    }
    out
}

fn psql_admin(query: &str) -> String {
    let s = cluster();
    let password = std::fs::read_to_string(s.get("VK_POSTGRES_ADMIN_PASSWORD_FILE")).unwrap();
    record_secret(&password);
    let out = Command::new(format!("{}/psql", s.get("VK_PG_BIN")))
        .env_clear()
        .env("PGPASSWORD", password)
        .args([
            "-X",
            "-h",
            s.get("VK_POSTGRES_HOST"),
            "-p",
            s.get("VK_POSTGRES_PORT"),
        ])
        .args([
            "-U",
            s.get("VK_POSTGRES_ADMIN"),
            "-d",
            "postgres",
            "-Atc",
            query,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lease_exists(lease_id: &str) -> bool {
    cluster()
        .try_vault(
            Method::Put,
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        )
        .is_ok()
}

#[test]
fn sidecar_delivers_credentials_and_certificate_and_revokes_them_when_the_pod_goes() {
    let s = cluster();
    let pod = Pod::new(RoleOptions {
        policies: &["vk-demo", "vk-leased"],
        ..Default::default()
    });
    pod.unbind_role();
    let common = [
        ("VAULT_ADDR", s.get("VAULT_ADDR")),
        ("VAULT_ROLE", pod.role.as_str()),
        ("VAULT_TOKEN_PATH", "/home/vault/token"),
    ];
    let token = json!([{"name": "vault-token", "mountPath": "/home/vault"}]);
    let files = json!([{"name": "vault-token", "mountPath": "/home/vault", "readOnly": true},
                       {"name": "secrets", "mountPath": "/vault/secrets"}]);
    let mut sync_env = common.to_vec();
    sync_env.extend([
        (
            "VAULT_SECRETS",
            "creds:database/creds/app:db,cert:pki/issue/app?common_name=pod.vk.test&ttl=10m:tls",
        ),
        ("SYNCHRONIZER_TARGET_DIR", "/vault/secrets"),
        ("SYNC_INTERVAL", "1h"),
        ("VAULT_REVOKE_ON_SHUTDOWN", "true"),
    ]);
    let mut sidecar = container(
        "vault-synchronizer",
        &format!("localhost/vault-kubernetes-synchronizer:{VERSION}"),
        &sync_env,
        files,
    );
    sidecar["restartPolicy"] = json!("Always");
    let mut app = container(
        "app",
        s.get("VK_TOOLS_IMAGE"),
        &[
            ("PGHOST", s.get("VK_POSTGRES_HOST")),
            ("PGPORT", s.get("VK_POSTGRES_PORT")),
            ("PGDATABASE", "postgres"),
        ],
        json!([{"name": "secrets", "mountPath": "/vault/secrets", "readOnly": true}]),
    );
    app["command"] = json!(["/bin/sh", "-c", "trap 'exit 0' TERM; cd /vault/secrets; \
        until test -e db/password && test -e tls/tls.key; do sleep 1; done; \
        echo \"psql: $(PGPASSWORD=$(cat db/password) psql -X -U \"$(cat db/username)\" -Atc 'select current_user' 2>&1)\"; \
        echo \"openssl: $(openssl verify -CAfile tls/ca.crt tls/tls.crt 2>&1)\"; \
        sleep 3600 & wait $!"]);
    let spec = json!({
        "serviceAccountName": "app", "hostNetwork": true, "enableServiceLinks": false,
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 20,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                            "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [
            container("vault-authenticator",
                      &format!("localhost/vault-kubernetes-authenticator:{VERSION}"), &common, token),
            sidecar,
        ],
        "containers": [app],
        "volumes": [{"name": "vault-token", "emptyDir": {"medium": "Memory"}},
                    {"name": "secrets", "emptyDir": {"medium": "Memory"}}],
    });
    let (_, issues) = vault_audit("pki/issue/app", || {
        s.kube(
            Method::Post,
            &format!("/api/v1/namespaces/{}/pods", pod.namespace),
            Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "leased"}, "spec": spec})),
        );
        let seen = wait_until(Duration::from_secs(120), || {
            let log = container_log(&pod, "leased", "app");
            log.contains("psql: ") && log.contains("openssl: ")
        });
        let sync = container_log(&pod, "leased", "vault-synchronizer");
        assert!(seen, "app never ran its checks\n{sync}");
    });
    let app = container_log(&pod, "leased", "app");
    let sync = container_log(&pod, "leased", "vault-synchronizer");
    let user = app
        .lines()
        .find_map(|l| l.strip_prefix("psql: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(user.starts_with("v-"), "psql failed: {app}\n{sync}");
    assert!(app.contains("openssl: tls/tls.crt: OK"), "{app}");
    let lease_id = issues
        .iter()
        .filter(|e| e["auth"]["metadata"]["service_account_namespace"] == pod.namespace.as_str())
        .find_map(|e| e["response"]["secret"]["lease_id"].as_str())
        .unwrap_or_else(|| panic!("no issue audited for the pod\n{sync}"))
        .to_string();
    let role_count = format!("select count(*) from pg_roles where rolname = '{user}'");
    assert_eq!(psql_admin(&role_count), "1");
    assert!(lease_exists(&lease_id));

    s.kube(
        Method::Delete,
        &format!("/api/v1/namespaces/{}/pods/leased", pod.namespace),
        None,
    );
    let start = Instant::now();
    let gone = wait_until(Duration::from_secs(60), || {
        s.try_kube(
            Method::Get,
            &format!("/api/v1/namespaces/{}/pods/leased", pod.namespace),
            None,
        )
        .is_err()
    });
    assert!(gone, "pod still there after 60 s");
    assert_eq!(psql_admin(&role_count), "0", "{user} still in pg_roles");
    assert!(
        !lease_exists(&lease_id),
        "the certificate's lease is still there"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

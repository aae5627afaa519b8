//! The three programs in real pods on the single-node cluster of
//! `scripts/stack.sh up --cluster` (kubelet, containerd, our images):
//! projected service-account tokens, init-container order, native sidecars
//! and their shutdown, a token shared with an app running as another user,
//! Jobs, Vault's JWT auth method, and the demo under pod security.
//!
//! Network: every pod that talks to OpenBao or the API server uses the
//! host's network and the API server's loopback address; nothing dials the
//! `kubernetes` Service's ClusterIP or the node's address (no `kubectl
//! logs/exec`): container logs are read from the kubelet's pod log directory.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::*;
use support::*;
use vault_kubernetes::http::Method;

#[test]
fn scenario_1_app_as_another_uid_reads_the_token_through_fs_group() {
    let pod = Pod::new(RoleOptions::default());
    let spec = pod_spec(
        vec![container("vault-authenticator", &image("authenticator"), env(&pod, &[]))],
        vec![shell(
            "app",
            Some(1000),
            "id; stat -c 'mode %a owner %u group %g' /home/vault/token; \
             test -r /home/vault/token && echo \"token readable: $(wc -c < /home/vault/token) bytes\"",
        )],
    );
    create_pod(&pod, "scenario-1", spec);
    let p = wait_pod(&pod, "scenario-1", 120, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    let auth = container_log(&pod, "scenario-1", "vault-authenticator");
    let app = container_log(&pod, "scenario-1", "app");
    assert_eq!(phase(&p), "Succeeded", "{auth}\n{app}");
    assert!(
        auth.contains("successfully authenticated to vault"),
        "{auth}"
    );
    assert!(
        auth.contains("successfully stored vault token at /home/vault/token"),
        "{auth}"
    );
    // The app runs as uid 1000 with the pod's fsGroup as a supplementary
    // group; the file is 65534's, group 2000 from the volume, not world-readable.
    assert!(app.contains("uid=1000") && app.contains("2000"), "{app}");
    assert!(app.contains("mode 640 owner 65534 group 2000"), "{app}");
    let bytes: usize = app
        .split("token readable: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{app}"));
    assert!(bytes > 20, "{app}");
    assert_eq!(audited(&pod, "auth/kubernetes/login"), 1);
}

#[test]
fn scenario_2_synchronized_secret_reaches_the_app_through_env_from() {
    let pod = Pod::new(RoleOptions::default());
    let s = cluster();
    let path = format!("k8s/{}/config", pod.namespace);
    s.kv_put("secret", &path, json!({"greeting": "hello-from-openbao"}));
    let sync_env = env(
        &pod,
        &[("VAULT_SECRETS", &format!("secret/{path}:app-config"))],
    );
    let mut app = shell("app", None, "echo \"greeting=$greeting\"");
    app["envFrom"] = json!([{"secretRef": {"name": "app-config"}}]);
    let spec = pod_spec(
        vec![
            container(
                "vault-authenticator",
                &image("authenticator"),
                env(&pod, &[]),
            ),
            container("vault-synchronizer", &image("synchronizer"), sync_env),
        ],
        vec![app],
    );
    create_pod(&pod, "scenario-2", spec);
    let p = wait_pod(&pod, "scenario-2", 120, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    let logs = all_logs(&pod, "scenario-2");
    assert_eq!(phase(&p), "Succeeded", "{logs}");
    let secret = pod.secret("app-config").expect("Secret app-config");
    assert_eq!(
        secret["metadata"]["annotations"]["vault-secret"],
        format!("secret/{path}"),
        "{secret:#}"
    );
    let app_log = container_log(&pod, "scenario-2", "app");
    assert!(app_log.contains("greeting=hello-from-openbao"), "{logs}");
}

#[test]
fn scenario_3_native_sidecar_renews_then_revokes_at_pod_deletion() {
    let pod = Pod::new(RoleOptions {
        ttl: "6s",
        max_ttl: "1h",
        ..Default::default()
    });
    let mut renewer = container(
        "vault-token-renewer",
        &image("token-renewer"),
        env(
            &pod,
            &[
                ("VAULT_REAUTH", "true"),
                ("VAULT_REVOKE_ON_SHUTDOWN", "true"),
            ],
        ),
    );
    renewer["restartPolicy"] = json!("Always");
    let app = container("app", cluster().get("VK_PAUSE_IMAGE"), json!([]));
    let spec = pod_spec(
        vec![
            container(
                "vault-authenticator",
                &image("authenticator"),
                env(&pod, &[]),
            ),
            renewer,
        ],
        vec![app],
    );
    create_pod(&pod, "scenario-3", spec);
    wait_pod(&pod, "scenario-3", 120, |p| phase(p) == "Running");
    let end = Instant::now() + Duration::from_secs(40);
    while audited(&pod, "auth/token/renew-self") < 2 {
        assert!(
            Instant::now() < end,
            "fewer than 2 renewals in 40s: {}",
            all_logs(&pod, "scenario-3")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let live = accessors(&pod);
    assert_eq!(live.len(), 1, "one token for the pod: {live:?}");
    let log = container_log(&pod, "scenario-3", "vault-token-renewer");
    assert!(log.contains("renew"), "{log}");

    let started = Instant::now();
    cluster().kube(
        Method::Delete,
        &format!("/api/v1/namespaces/{}/pods/scenario-3", pod.namespace),
        None,
    );
    let end = Instant::now() + Duration::from_secs(60);
    while get_pod(&pod, "scenario-3").is_some() {
        assert!(Instant::now() < end, "pod still there 60s after deletion");
        std::thread::sleep(Duration::from_millis(250));
    }
    // SIGTERM made the renewer exit well within the 30 s grace period (the
    // kubelet would have waited for it and then killed it).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "pod took {:?} to go",
        started.elapsed()
    );
    assert!(
        cluster()
            .try_vault(
                Method::Post,
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": live[0] })),
            )
            .is_err(),
        "the pod's token was not revoked"
    );
    assert_eq!(audited(&pod, "auth/token/revoke-self"), 1);
}

#[test]
fn job_with_the_renewer_as_native_sidecar_completes() {
    let pod = Pod::new(RoleOptions::default());
    let mut renewer = container(
        "vault-token-renewer",
        &image("token-renewer"),
        env(&pod, &[("VAULT_REVOKE_ON_SHUTDOWN", "true")]),
    );
    renewer["restartPolicy"] = json!("Always");
    let spec = pod_spec(
        vec![
            container(
                "vault-authenticator",
                &image("authenticator"),
                env(&pod, &[]),
            ),
            renewer,
        ],
        vec![shell(
            "work",
            None,
            "test -s /home/vault/token && echo work done with a token",
        )],
    );
    let s = cluster();
    s.kube(
        Method::Post,
        &format!("/apis/batch/v1/namespaces/{}/jobs", pod.namespace),
        Some(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job"},
                    "spec": {"backoffLimit": 0, "template": {"spec": spec}}}),
        ),
    );
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let job = s.kube(
            Method::Get,
            &format!("/apis/batch/v1/namespaces/{}/jobs/job", pod.namespace),
            None,
        );
        let conditions = job["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has = |t: &str| {
            conditions
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        if has("Complete") {
            break;
        }
        assert!(!has("Failed"), "job failed: {:#}", job["status"]);
        assert!(
            Instant::now() < end,
            "job not complete after 120s: {:#}",
            job["status"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The sidecar was stopped after the work and revoked its token.
    let end = Instant::now() + Duration::from_secs(30);
    while audited(&pod, "auth/token/revoke-self") < 1 {
        assert!(Instant::now() < end, "no revocation after the job");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn jwt_auth_method_with_a_projected_token_of_audience_vault() {
    let pod = Pod::new(RoleOptions::default());
    let s = cluster();
    jwt_role(&pod);
    let mut auth = container(
        "vault-authenticator",
        &image("authenticator"),
        env(
            &pod,
            &[
                ("VAULT_AUTH_MOUNT_PATH", "jwt"),
                ("SERVICE_ACCOUNT_TOKEN_PATH", "/var/run/secrets/vault/token"),
            ],
        ),
    );
    auth["volumeMounts"].as_array_mut().unwrap().push(
        json!({"name": "vault-jwt", "mountPath": "/var/run/secrets/vault", "readOnly": true}),
    );
    let mut spec = pod_spec(
        vec![auth],
        vec![shell(
            "app",
            None,
            "test -s /home/vault/token && echo token present",
        )],
    );
    // Only the projected token of audience `vault`: no API server token.
    spec["automountServiceAccountToken"] = json!(false);
    spec["volumes"].as_array_mut().unwrap().push(json!({
        "name": "vault-jwt",
        "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}]},
    }));
    create_pod(&pod, "jwt", spec);
    let p = wait_pod(&pod, "jwt", 120, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    let logs = all_logs(&pod, "jwt");
    assert_eq!(phase(&p), "Succeeded", "{logs}");
    assert!(
        logs.contains("successfully authenticated to vault"),
        "{logs}"
    );
    assert!(logs.contains("token present"), "{logs}");
    let log = std::fs::read_to_string(s.get("VK_VAULT_AUDIT_LOG")).unwrap();
    let logins = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "auth/jwt/login"
                && e["auth"]["metadata"]["role"] == pod.role.as_str()
        })
        .count();
    assert_eq!(logins, 1);
}

#[test]
fn demo_pods_run_restricted_apart_from_host_network() {
    let s = cluster();
    let ns = unique("demo");
    let role = ns.clone();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/vault-setup.sh"))
        .envs([
            ("VAULT_ADDR", s.get("VAULT_ADDR")),
            ("VAULT_TOKEN", s.get("VK_VAULT_ROOT_TOKEN")),
            ("VAULT_CLI", &format!("{}/bao", s.get("VK_BIN"))),
            ("KUBERNETES_HOST", s.get("VK_KUBE_ADDR")),
            ("KUBERNETES_CA_CERT", s.get("VK_CA_CERT")),
            ("VAULT_AUTH_MOUNT", "kubernetes"),
            ("VAULT_ROLE", &role),
            ("NAMESPACE", &ns),
            ("SERVICE_ACCOUNT", "vault-kubernetes"),
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out);
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/deploy.sh"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/local/profile"))
        .envs([
            ("NAMESPACE", ns.as_str()),
            // demo/local/profile takes these from the stack's environment.
            ("VK_POSTGRES_HOST", s.get("VK_POSTGRES_HOST")),
            ("VK_POSTGRES_PORT", s.get("VK_POSTGRES_PORT")),
            ("VK_TOOLS_IMAGE", s.get("VK_TOOLS_IMAGE")),
            ("VAULT_ROLE_NAME", &role),
            ("VAULT_ADDR", s.get("VAULT_ADDR")),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", s.get("KUBERNETES_SERVICE_PORT")),
            (
                "KUBECTL",
                &format!(
                    "{}/kubectl --kubeconfig {}",
                    s.get("VK_BIN"),
                    s.get("VK_KUBECONFIG")
                ),
            ),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("Warning")).collect();
    assert!(!warnings.is_empty(), "warn: restricted applies: {stderr}");
    for w in &warnings {
        assert!(
            w.ends_with("would violate PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true)"),
            "a warning other than hostNetwork: {w}"
        );
    }
    // Every replica of every Deployment Running with all containers ready.
    let deployments = s.kube(
        Method::Get,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        None,
    );
    let replicas: u64 = deployments["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1))
        .sum();
    assert!(replicas >= 5, "{replicas} replicas");
    let end = Instant::now() + Duration::from_secs(180);
    let pods = loop {
        let list = s.kube(Method::Get, &format!("/api/v1/namespaces/{ns}/pods"), None);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ready = items.len() as u64 == replicas
            && items.iter().all(|p| {
                phase(p) == "Running"
                    && p["status"]["containerStatuses"]
                        .as_array()
                        .is_some_and(|c| c.iter().all(|c| c["ready"] == true))
            });
        if ready {
            break items;
        }
        assert!(
            Instant::now() < end,
            "demo pods not Running after 180s: {:#}",
            Value::Array(items.iter().map(|p| p["status"].clone()).collect())
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    for p in &pods {
        let spec = &p["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let containers = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(spec["containers"].as_array().unwrap());
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{c:#}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{c:#}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{c:#}");
        }
    }
    let secrets = s.kube(
        Method::Get,
        &format!("/api/v1/namespaces/{ns}/secrets"),
        None,
    );
    let names: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"demo-first"), "{names:?}");
    s.kube(Method::Delete, &format!("/api/v1/namespaces/{ns}"), None);
    s.kube(
        Method::Delete,
        &format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{ns}-auth-delegator"),
        None,
    );
}

#[test]
fn scenario_2b_files_in_a_memory_volume_without_kubernetes_permissions() {
    let pod = Pod::new(RoleOptions::default());
    let s = cluster();
    // The file target needs no Kubernetes permission: no Role binding at all.
    pod.unbind_role();
    let path = format!("k8s/{}/db", pod.namespace);
    s.kv_put("secret", &path, json!({"password": "files-from-openbao"}));
    let mut sync = container(
        "vault-synchronizer",
        &image("synchronizer"),
        env(
            &pod,
            &[
                ("VAULT_SECRETS", &format!("secret/{path}")),
                ("SYNCHRONIZER_TARGET_DIR", "/vault/secrets"),
            ],
        ),
    );
    sync["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "vault-secrets", "mountPath": "/vault/secrets"}));
    let mut app = shell(
        "app",
        Some(1000),
        "stat -c 'mode %a group %g' /vault/secrets/db/..data/password; \
         readlink /vault/secrets/db/password; \
         test \"$(cat /vault/secrets/db/password)\" = files-from-openbao && echo value matches",
    );
    app["volumeMounts"] =
        json!([{"name": "vault-secrets", "mountPath": "/vault/secrets", "readOnly": true}]);
    let mut spec = pod_spec(
        vec![
            container(
                "vault-authenticator",
                &image("authenticator"),
                env(&pod, &[]),
            ),
            sync,
        ],
        vec![app],
    );
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "vault-secrets", "emptyDir": {"medium": "Memory"}}));
    let (p, events) = kube_audit(&pod.namespace, || {
        create_pod(&pod, "scenario-2b", spec);
        wait_pod(&pod, "scenario-2b", 120, |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
    });
    let logs = all_logs(&pod, "scenario-2b");
    assert_eq!(phase(&p), "Succeeded", "{logs}");
    let app = container_log(&pod, "scenario-2b", "app");
    // Mode 0440, group from fsGroup: the app (uid 1000) reads through the group.
    assert!(app.contains("mode 440 group 2000"), "{logs}");
    assert!(app.contains("..data/password"), "{logs}");
    assert!(app.contains("value matches"), "{logs}");
    let sync = container_log(&pod, "scenario-2b", "vault-synchronizer");
    assert!(
        sync.contains("create directory /vault/secrets/db"),
        "{sync}"
    );
    assert_eq!(
        events,
        Vec::<Value>::new(),
        "no request on Secrets by the pod"
    );
    assert_eq!(
        pod.secret_names(),
        Vec::<String>::new(),
        "no Secret written"
    );
}

//! vault-kubernetes-env in real pods on the single-node cluster of
//! `scripts/stack.sh up --cluster`: an init container of the env image
//! installs the binary into a memory volume (`--install`), and a busybox
//! app container runs through it. No authenticator: the wrapper logs in
//! itself with the pod's projected service-account token.
//!
//! The app reports digests, never values (tests/env_app). Network and logs
//! as in tests/pods.rs: host network, OpenBao on loopback, container logs
//! read from the kubelet's pod log directory.

mod env_app;
mod support;

use std::time::{Duration, Instant};

use env_app::{parse, script, sha256};
use serde_json::{json, Value};
use support::cluster::*;
use support::*;
use vault_kubernetes::http::Method;

const WRAPPER: &str = "/vault-env/vault-kubernetes-env";

/// A pod whose role reads `secret/data/<prefix>/*`, with `data` at
/// `secret/<prefix>/db`; returns it and the prefix.
fn pod_with(data: Value) -> (Pod, String) {
    let prefix = unique("penv");
    let policy = unique("penv-policy");
    let s = cluster();
    s.policy(
        &policy,
        &format!(r#"path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}"#),
    );
    s.kv_put("secret", &format!("{prefix}/db"), data);
    let pod = Pod::new(RoleOptions {
        policies: &[policy.as_str()],
        ..Default::default()
    });
    (pod, prefix)
}

/// The pod: the env image's init container installs the wrapper into a
/// memory volume, the app (busybox) runs `script` through it with `env`
/// and the stack's Vault; both restricted, as every container of ours.
fn create(pod: &Pod, name: &str, env: &[(&str, &str)], script: &str) {
    create_with(pod, name, env, script, |_| {});
}

/// [`create`], with a last change to the pod spec.
fn create_with(
    pod: &Pod,
    name: &str,
    env: &[(&str, &str)],
    script: &str,
    change: impl FnOnce(&mut Value),
) {
    let mut vars = vec![json!({"name": "VAULT_ADDR", "value": cluster().get("VAULT_ADDR")})];
    vars.extend(env.iter().map(|(k, v)| json!({"name": k, "value": v})));
    let mut install = container("vault-env-install", &image("env"), json!([]));
    install["args"] = json!(["--install", "/vault-env"]);
    install["volumeMounts"] = json!([{"name": "vault-env", "mountPath": "/vault-env"}]);
    let mut app = container("app", &busybox(), json!(vars));
    // `$$` is Kubernetes' escape for `$` in a command.
    app["command"] = json!([WRAPPER, "--", "/bin/sh", "-c", script.replace('$', "$$")]);
    app["volumeMounts"] =
        json!([{"name": "vault-env", "mountPath": "/vault-env", "readOnly": true}]);
    let mut spec = pod_spec(vec![install], vec![app]);
    spec["volumes"] =
        json!([{"name": "vault-env", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]);
    change(&mut spec);
    create_pod(pod, name, spec);
}

/// Polls until `done` holds for the pod and its app's log; returns both,
/// and hands the wrapper's lines to the log scan.
fn wait(pod: &Pod, name: &str, done: impl Fn(&Value, &str) -> bool) -> (Value, String) {
    let p = wait_pod(pod, name, 120, |p| {
        done(p, &container_log(pod, name, "app"))
    });
    let app = container_log(pod, name, "app");
    record_wrapper_lines(&app);
    (p, app)
}

/// Hands the wrapper's lines of an app log (the ones in the log layout,
/// not the app's report) to the log scan of tests/log_scan.rs.
fn record_wrapper_lines(app_log: &str) {
    use std::os::unix::process::ExitStatusExt;
    let lines: String = app_log
        .lines()
        .filter(|l| l.len() > 20 && l.as_bytes()[4] == b'/' && l.as_bytes()[13] == b':')
        .map(|l| format!("{l}\n"))
        .collect();
    record_log(&std::process::Output {
        status: std::process::ExitStatus::from_raw(0),
        stdout: Vec::new(),
        stderr: lines.into_bytes(),
    });
}

fn app_exit_code(p: &Value) -> Option<i64> {
    p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].as_i64()
}

#[test]
fn the_app_is_pid_1_with_the_values_and_stops_on_sigterm_by_itself() {
    let (pod, p) = pod_with(json!({"user": "pod-user-1", "password": "pod-pw-8c2j"}));
    let user = format!("vault:secret/data/{p}/db#user");
    let password = format!("vault:secret/{p}/db#password");
    // The report, then a PID 1 that stops on SIGTERM by itself (as PID 1
    // without a handler it would ignore it, and wait out the grace period).
    let app = format!(
        "{}trap 'echo got-term; exit 0' TERM\necho ready\nwhile :; do sleep 1; done",
        script(&["DB_USER", "DB_PASSWORD"])
    );
    create(
        &pod,
        "env-app",
        &[
            ("VAULT_ROLE", pod.role.as_str()),
            ("DB_USER", &user),
            ("DB_PASSWORD", &password),
            ("VAULT_TOKEN", "s.some-other-token"),
            ("VAULT_HEADERS", r#"{"X-Team":"t"}"#),
        ],
        &app,
    );
    let (p_json, out) = wait(&pod, "env-app", |_, app| app.contains("ready"));
    let seen = parse(out.as_bytes());
    assert_eq!(seen.pid, 1, "{out}");
    assert_eq!(
        seen.digests["DB_USER"],
        Some(sha256(b"pod-user-1")),
        "{out}"
    );
    assert_eq!(
        seen.digests["DB_PASSWORD"],
        Some(sha256(b"pod-pw-8c2j")),
        "{out}"
    );
    // /proc/1/environ: none of the wrapper's credential variables.
    for gone in [
        "VAULT_TOKEN",
        "VAULT_HEADERS",
        "VAULT_SECRET_ID",
        "VAULT_ROLE_ID",
    ] {
        assert!(!seen.names.contains(gone), "{gone}: {:?}", seen.names);
    }
    assert!(seen.names.contains("DB_PASSWORD"), "{:?}", seen.names);
    assert_eq!(seen.sig_blk, 0, "{out}");
    assert!(out.contains("successfully authenticated to vault"), "{out}");
    assert!(out.contains("revoked the wrapper's token"), "{out}");
    assert!(container_log(&pod, "env-app", "vault-env-install")
        .contains("installed /vault-env/vault-kubernetes-env"));
    // The API server holds only the references.
    let text = p_json.to_string();
    assert!(text.contains(&password) && text.contains(&user));
    assert!(!text.contains("pod-pw-8c2j") && !text.contains("pod-user-1"));
    assert_eq!(audited(&pod, "auth/kubernetes/login"), 1);
    assert_eq!(audited(&pod, "auth/token/revoke-self"), 1);

    let started = Instant::now();
    cluster().kube(
        Method::Delete,
        &format!("/api/v1/namespaces/{}/pods/env-app", pod.namespace),
        None,
    );
    let end = Instant::now() + Duration::from_secs(60);
    while get_pod(&pod, "env-app").is_some() {
        assert!(Instant::now() < end, "pod still there 60s after deletion");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Well within the 30 s grace period: the app itself got SIGTERM.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "pod took {:?} to go",
        started.elapsed()
    );
}

#[test]
fn an_unresolvable_reference_stops_the_container_with_the_line_naming_it() {
    let (pod, p) = pod_with(json!({"user": "u"}));
    let missing = format!("vault:secret/data/{p}/db#password");
    create(
        &pod,
        "env-fail",
        &[("VAULT_ROLE", pod.role.as_str()), ("DB_PASSWORD", &missing)],
        "echo app-started",
    );
    let (p_json, out) = wait(&pod, "env-fail", |p, _| phase(p) == "Failed");
    assert_eq!(app_exit_code(&p_json), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "app not started: DB_PASSWORD: {missing}: key \"password\" not found"
        )),
        "{out}"
    );
    assert!(!out.contains("app-started"), "{out}");
}

#[test]
fn allow_fail_starts_the_app_without_the_values() {
    let (pod, p) = pod_with(json!({"user": "allow-user-3"}));
    let good = format!("vault:secret/data/{p}/db#user");
    let bad = format!("vault:secret/data/{p}/db#password");
    create(
        &pod,
        "env-allow",
        &[
            ("VAULT_ROLE", pod.role.as_str()),
            ("ALLOW_FAIL", "true"),
            ("DB_USER", &good),
            ("DB_PASSWORD", &bad),
        ],
        &script(&["DB_USER", "DB_PASSWORD"]),
    );
    let (p_json, out) = wait(&pod, "env-allow", |p, _| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(phase(&p_json), "Succeeded", "{out}");
    let seen = parse(out.as_bytes());
    assert_eq!(
        seen.digests["DB_USER"],
        Some(sha256(b"allow-user-3")),
        "{out}"
    );
    assert_eq!(seen.digests["DB_PASSWORD"], None, "{out}");
    assert!(
        out.contains("ALLOW_FAIL is set therefore the app starts without DB_PASSWORD"),
        "{out}"
    );
}

#[test]
fn approle_credentials_are_not_in_proc_1_environ() {
    let (pod, p) = pod_with(json!({"user": "approle-user-4"}));
    let s = cluster();
    let policy = unique("penv-ar");
    s.policy(
        &policy,
        &format!(r#"path "secret/data/{p}/*" {{ capabilities = ["read"] }}"#),
    );
    let (role_id, secret_id) = s.approle(None, &[policy.as_str()], json!({}));
    let user = format!("vault:secret/data/{p}/db#user");
    create(
        &pod,
        "env-approle",
        &[
            ("VAULT_ROLE_ID", &role_id),
            ("VAULT_SECRET_ID", &secret_id),
            ("DB_USER", &user),
        ],
        &script(&["DB_USER"]),
    );
    let (p_json, out) = wait(&pod, "env-approle", |p, _| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(phase(&p_json), "Succeeded", "{out}");
    let seen = parse(out.as_bytes());
    assert_eq!(seen.pid, 1, "{out}");
    assert_eq!(seen.digests["DB_USER"], Some(sha256(b"approle-user-4")));
    assert!(!seen.names.contains("VAULT_SECRET_ID") && !seen.names.contains("VAULT_ROLE_ID"));
    assert!(!out.contains(&secret_id));
}

#[test]
fn it_logs_in_with_vault_jwt_auth_and_a_projected_token() {
    let (pod, p) = pod_with(json!({"user": "jwt-user-5"}));
    let s = cluster();
    // A JWT auth mount of its own, validating the cluster's service-account
    // tokens with the issuer's public key (no TokenReview).
    let mount = "jwt-env";
    if s.try_vault(Method::Get, &format!("sys/auth/{mount}"), None)
        .is_err()
    {
        let _ = s.try_vault(
            Method::Post,
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "jwt"})),
        );
        let key = std::fs::read_to_string(s.get("VK_SA_PUBLIC_KEY")).unwrap();
        s.vault(
            Method::Post,
            &format!("auth/{mount}/config"),
            Some(json!({"jwt_validation_pubkeys": [key]})),
        );
    }
    let policy = unique("penv-jwt");
    s.policy(
        &policy,
        &format!(r#"path "secret/data/{p}/*" {{ capabilities = ["read"] }}"#),
    );
    s.vault(
        Method::Post,
        &format!("auth/{mount}/role/{}", pod.role),
        Some(json!({
            "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
            "bound_subject": format!("system:serviceaccount:{}:app", pod.namespace),
            "token_policies": [policy], "token_ttl": "1h",
        })),
    );
    let user = format!("vault:secret/data/{p}/db#user");
    create_with(
        &pod,
        "env-jwt",
        &[
            ("VAULT_ROLE", pod.role.as_str()),
            ("VAULT_AUTH_MOUNT_PATH", mount),
            ("SERVICE_ACCOUNT_TOKEN_PATH", "/var/run/secrets/vault/token"),
            ("DB_USER", &user),
        ],
        &script(&["DB_USER"]),
        |spec| {
            // Only the projected token of audience `vault`.
            spec["automountServiceAccountToken"] = json!(false);
            spec["volumes"].as_array_mut().unwrap().push(json!({
                "name": "vault-jwt",
                "projected": {"sources": [{"serviceAccountToken":
                    {"audience": "vault", "expirationSeconds": 600, "path": "token"}}]},
            }));
            spec["containers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "vault-jwt", "mountPath": "/var/run/secrets/vault", "readOnly": true}));
        },
    );
    let (p_json, out) = wait(&pod, "env-jwt", |p, _| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(phase(&p_json), "Succeeded", "{out}");
    assert_eq!(
        parse(out.as_bytes()).digests["DB_USER"],
        Some(sha256(b"jwt-user-5")),
        "{out}"
    );
    // No API server token in the pod: only the JWT login can have worked.
    assert!(out.contains("successfully authenticated to vault"), "{out}");
    assert!(out.contains("revoked the wrapper's token"), "{out}");
}

//! vault-kubernetes-env against the real stack, as host processes: the
//! app is a shell that reports its PID, a SHA-256 digest of each variable
//! (never a value), the names in its initial environment
//! (`/proc/self/environ`), its signal mask and ignored signals, and its
//! open sockets. Pod tests are in tests/pods_env.rs.

mod env_app;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::time::Duration;

use env_app::{parse, script, sha256};
use serde_json::{json, Value};
use support::*;
use vault_kubernetes::http::Method;

const ENV: &str = env!("CARGO_BIN_EXE_vault-kubernetes-env");
/// Runs the wrapper around the reporting shell; (output, wrapper's PID).
fn wrap(env: &[(String, String)], vars: &[&str]) -> (Output, u32) {
    let child = command(ENV, env.iter().cloned())
        .args(["--", "/bin/sh", "-c", &script(vars)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    record_log(&out);
    (out, pid)
}

/// A pod whose Vault role may read `secret/data/<prefix>/*` and
/// `kv1/<prefix>/*` (and what `extra` grants); returns it and the prefix.
fn pod_with_paths(extra: &str) -> (Pod, String) {
    let prefix = unique("env");
    let policy = unique("env-policy");
    stack().policy(
        &policy,
        &format!(
            r#"path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}
path "kv1/{prefix}/*" {{ capabilities = ["read"] }}
{extra}"#
        ),
    );
    let pod = Pod::new(RoleOptions {
        policies: &[policy.as_str()],
        ..Default::default()
    });
    (pod, prefix)
}

/// The pod's environment for a self-login: no token file.
fn login_env(pod: &Pod, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = with(&pod.env(), &[("VAULT_TOKEN_PATH", "")]);
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    with(&env, extra)
}

/// OpenBao audit responses for `path_part` of tokens of `pod`'s service account.
fn pod_events<'a>(events: &'a [Value], pod: &Pod, path_part: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            // A login's token is in its response; other calls carry theirs.
            let ns = |auth: &Value| {
                auth["metadata"]["service_account_namespace"] == pod.namespace.as_str()
            };
            e["request"]["path"]
                .as_str()
                .is_some_and(|p| p.contains(path_part))
                && (ns(&e["auth"]) || ns(&e["response"]["auth"]))
        })
        .collect()
}

#[test]
fn references_resolve_and_the_app_takes_the_process() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put("secret", &format!("{p}/db"), json!({"user": "app-user", "password": "pw-9f3k-x2", "port": 5432, "cert": "base64:/wECAw=="}));
    s.kv_put("secret", &format!("{p}/db"), json!({"user": "app-user", "password": "pw-newer-77q", "port": 5432, "cert": "base64:/wECAw=="}));
    s.kv1_put("kv1", &format!("{p}/api"), json!({"key": "k1-secret-zz"}));
    let refs = [
        ("DB_USER", format!("vault:secret/data/{p}/db#user")),
        ("DB_PASSWORD", format!("vault:secret/{p}/db#password")),
        (
            "DB_PASSWORD_V1",
            format!("vault:secret/data/{p}/db#password#1"),
        ),
        ("DB_PORT", format!("vault:secret/data/{p}/db#port")),
        ("CERT", format!("vault:secret/data/{p}/db#cert")),
        ("API_KEY", format!("vault:kv1/{p}/api#key")),
    ];
    let mut extra: Vec<(&str, &str)> = refs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.extend([
        ("TRANSIT", "vault:v1:c2VjcmV0Cg=="),
        ("PLAIN", "myvault:x#y"),
        // Credentials of the wrapper: never the app's.
        ("VAULT_TOKEN", "s.not-used-by-the-wrapper"),
        ("VAULT_HEADERS", r#"{"X-Team":"t"}"#),
    ]);
    let vars: Vec<&str> = refs
        .iter()
        .map(|(k, _)| *k)
        .chain(["TRANSIT", "PLAIN"])
        .collect();
    let ((out, pid), events) = vault_audit("auth/", || wrap(&login_env(&pod, &extra), &vars));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let seen = parse(&out.stdout);
    // The app is the process we started: same PID.
    assert_eq!(seen.pid, pid, "{log}");
    let want: [(&str, &[u8]); 8] = [
        ("DB_USER", b"app-user"),
        ("DB_PASSWORD", b"pw-newer-77q"),
        ("DB_PASSWORD_V1", b"pw-9f3k-x2"),
        ("DB_PORT", b"5432"),
        ("CERT", &[0xff, 1, 2, 3]),
        ("API_KEY", b"k1-secret-zz"),
        ("TRANSIT", b"vault:v1:c2VjcmV0Cg=="),
        ("PLAIN", b"myvault:x#y"),
    ];
    for (name, value) in want {
        assert_eq!(seen.digests[name], Some(sha256(value)), "{name}: {log}");
    }
    for gone in ["VAULT_TOKEN", "VAULT_HEADERS"] {
        assert!(!seen.names.contains(gone), "{gone} in {:?}", seen.names);
    }
    assert!(seen.names.contains("VAULT_ADDR") && seen.names.contains("VAULT_ROLE"));
    // Signals as for any process started normally: SIGPIPE (13) not
    // ignored, nothing blocked; no socket of ours left open.
    assert_eq!(
        seen.sig_ign & (1 << 12),
        0,
        "SIGPIPE ignored: {:x}",
        seen.sig_ign
    );
    assert_eq!(seen.sig_blk, 0);
    assert_eq!(seen.sockets, 0);
    assert!(log.contains("successfully authenticated to vault"), "{log}");
    assert!(
        log.contains("resolved 6 variables from 3 vault secrets"),
        "{log}"
    );
    assert!(log.contains("revoked the wrapper's token"), "{log}");
    assert!(log.contains("starting /bin/sh"), "{log}");
    // One login, and its token revoked before the exec.
    assert_eq!(pod_events(&events, &pod, "/login").len(), 1, "{events:?}");
    assert_eq!(pod_events(&events, &pod, "token/revoke-self").len(), 1);
}

#[test]
fn a_token_file_is_used_and_never_revoked() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put(
        "secret",
        &format!("{p}/a"),
        json!({"x": "from-a-token-file"}),
    );
    // The authenticator leaves the token, as in a pod with it as init container.
    assert_ok(&run(AUTHENTICATOR, pod.env()));
    let token = std::fs::read_to_string(pod.token_path()).unwrap();
    let mut env = pod.env();
    env.retain(|(k, _)| k != "VAULT_ROLE");
    env.push(("X".into(), format!("vault:secret/data/{p}/a#x")));
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    let ((out, _), events) = vault_audit("auth/", || wrap(&env, &["X"]));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        parse(&out.stdout).digests["X"],
        Some(sha256(b"from-a-token-file"))
    );
    assert!(
        !log.contains("authenticated") && !log.contains("revoked"),
        "{log}"
    );
    assert!(pod_events(&events, &pod, "/login").is_empty());
    assert!(pod_events(&events, &pod, "revoke").is_empty());
    assert!(s.lookup(&token).is_some(), "the pod's token stays valid");
}

#[test]
fn without_its_token_file_it_logs_in() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put("secret", &format!("{p}/a"), json!({"x": "logged-in-value"}));
    let mut env = with(
        &pod.env(),
        &[
            ("X", &format!("vault:secret/data/{p}/a#x")),
            ("PATH", "/bin"),
        ],
    );
    env.retain(|(k, _)| k != "KUBERNETES_SERVICE_HOST");
    let (out, _) = wrap(&env, &["X"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "no token at {}: logging in",
            pod.token_path().display()
        )),
        "{log}"
    );
    assert_eq!(
        parse(&out.stdout).digests["X"],
        Some(sha256(b"logged-in-value"))
    );
    // Nothing written: no token file appears.
    assert!(!pod.token_path().exists());
}

#[test]
fn approle_credentials_never_reach_the_app() {
    let s = stack();
    let prefix = unique("env");
    let policy = unique("env-policy");
    s.policy(
        &policy,
        &format!(r#"path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}"#),
    );
    s.kv_put(
        "secret",
        &format!("{prefix}/a"),
        json!({"x": "approle-value"}),
    );
    let (role_id, secret_id) = s.approle(None, &[policy.as_str()], json!({}));
    let env: Vec<(String, String)> = [
        ("VAULT_ADDR", s.get("VAULT_ADDR")),
        ("VAULT_ROLE_ID", role_id.as_str()),
        ("VAULT_SECRET_ID", secret_id.as_str()),
        ("PATH", "/bin"),
        ("X", &format!("vault:secret/{prefix}/a#x")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (out, _) = wrap(&env, &["X", "VAULT_ROLE_ID", "VAULT_SECRET_ID"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let seen = parse(&out.stdout);
    assert_eq!(seen.digests["X"], Some(sha256(b"approle-value")));
    assert_eq!(seen.digests["VAULT_SECRET_ID"], None);
    assert_eq!(seen.digests["VAULT_ROLE_ID"], None);
    assert!(!log.contains(&secret_id));
}

#[test]
fn an_unresolvable_reference_stops_it_before_the_exec() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put(
        "secret",
        &format!("{p}/a"),
        json!({"x": "never-shown-value", "nul": "base64:YQBi"}),
    );
    let ok = format!("vault:secret/data/{p}/a#x");
    let no_key = format!("vault:secret/data/{p}/a#nope");
    let no_secret = format!("vault:secret/data/{p}/missing#x");
    let denied = "vault:secret/data/k8s/first#one".to_string();
    let nul = format!("vault:secret/data/{p}/a#nul");
    let env = login_env(
        &pod,
        &[
            ("OK", &ok),
            ("NO_KEY", &no_key),
            ("NO_SECRET", &no_secret),
            ("DENIED", &denied),
            ("NUL", &nul),
        ],
    );
    let ((out, _), events) = vault_audit("auth/", || wrap(&env, &["OK"]));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(out.stdout.is_empty(), "the app ran");
    let last = log.lines().last().unwrap();
    assert!(last.contains("app not started: "), "{last}");
    assert!(
        last.contains(&format!("NO_KEY: {no_key}: key \"nope\" not found")),
        "{last}"
    );
    assert!(
        last.contains(&format!("NO_SECRET: {no_secret}: secret not found")),
        "{last}"
    );
    assert!(last.contains(&format!("DENIED: {denied}: ")), "{last}");
    assert!(last.contains("permission denied"), "{last}");
    assert!(
        last.contains(&format!("NUL: {nul}: the value holds a NUL byte")),
        "{last}"
    );
    assert!(
        !last.contains("OK:") && !log.contains("never-shown-value"),
        "{log}"
    );
    // The token it logged in with does not outlive it.
    assert_eq!(pod_events(&events, &pod, "token/revoke-self").len(), 1);
}

#[test]
fn allow_fail_starts_the_app_without_the_values() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put("secret", &format!("{p}/a"), json!({"x": "allowed-value"}));
    let good = format!("vault:secret/data/{p}/a#x");
    let bad = format!("vault:secret/data/{p}/a#nope");
    let env = login_env(
        &pod,
        &[("ALLOW_FAIL", "true"), ("GOOD", &good), ("BAD", &bad)],
    );
    let (out, _) = wrap(&env, &["GOOD", "BAD"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let seen = parse(&out.stdout);
    assert_eq!(seen.digests["GOOD"], Some(sha256(b"allowed-value")));
    assert_eq!(
        seen.digests["BAD"], None,
        "the reference is not left in place"
    );
    assert!(
        log.contains(&format!(
            "BAD: {bad}: key \"nope\" not found - ALLOW_FAIL is set therefore the app starts without BAD"
        )),
        "{log}"
    );
    // A login that fails: the app starts with none of the references.
    let env = login_env(
        &pod,
        &[
            ("ALLOW_FAIL", "true"),
            ("GOOD", &good),
            ("VAULT_ROLE", "no-such-role"),
            ("LOGIN_TIMEOUT", "1s"),
        ],
    );
    let (out, _) = wrap(&env, &["GOOD"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(parse(&out.stdout).digests["GOOD"], None);
    assert!(
        log.contains("WARNING: authentication failed: ")
            && log
                .contains(" - ALLOW_FAIL is set therefore the app starts without the vault values"),
        "{log}"
    );
    // Without ALLOW_FAIL the same login failure stops it.
    let env = with(&env, &[("ALLOW_FAIL", "")]);
    let (out, _) = wrap(&env, &["GOOD"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn leased_paths_are_refused_without_a_read() {
    let s = stack();
    // Any engine but KV: a read there may mint a leased credential. The
    // role may read it, as a role meant for database/creds/... would.
    let mount = unique("transit");
    let (pod, p) = pod_with_paths(&format!(
        r#"path "{mount}/*" {{ capabilities = ["read"] }}"#
    ));
    s.vault(
        Method::Post,
        &format!("sys/mounts/{mount}"),
        Some(json!({"type": "transit"})),
    );
    let leased = format!("vault:{mount}/keys/app#name");
    s.kv_put("secret", &format!("{p}/a"), json!({"x": "v"}));
    let good = format!("vault:secret/data/{p}/a#x");
    for allow_fail in ["false", "true"] {
        let env = login_env(
            &pod,
            &[
                ("LEASED", &leased),
                ("GOOD", &good),
                ("ALLOW_FAIL", allow_fail),
            ],
        );
        let ((out, _), events) = vault_audit(&mount, || wrap(&env, &["GOOD"]));
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        let last = log.lines().last().unwrap();
        assert!(
            last.contains(&format!("LEASED: {leased}: {mount}/ is a \"transit\" mount, not KV: leased secrets are not supported")),
            "{last}"
        );
        // Only the mount was looked up; nothing read from it.
        let paths: Vec<&str> = events
            .iter()
            .filter_map(|e| e["request"]["path"].as_str())
            .collect();
        assert!(
            paths
                .iter()
                .all(|p| p.starts_with("sys/internal/ui/mounts/")),
            "{paths:?}"
        );
    }
}

#[test]
fn whole_secrets_become_variables() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put(
        "secret",
        &format!("{p}/all"),
        json!({"DB_HOST": "db.internal", "DB_NAME": "orders"}),
    );
    s.kv_put("secret", &format!("{p}/odd"), json!({"not-a-name": "x"}));
    s.kv_put(
        "secret",
        &format!("{p}/clash"),
        json!({"HOME": "/elsewhere"}),
    );
    s.kv_put(
        "secret",
        &format!("{p}/loader"),
        json!({"LD_PRELOAD": "/tmp/evil.so"}),
    );
    let env = login_env(
        &pod,
        &[("VAULT_ENV_FROM_PATH", &format!("secret/data/{p}/all"))],
    );
    let (out, _) = wrap(&env, &["DB_HOST", "DB_NAME"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let seen = parse(&out.stdout);
    assert_eq!(seen.digests["DB_HOST"], Some(sha256(b"db.internal")));
    assert_eq!(seen.digests["DB_NAME"], Some(sha256(b"orders")));
    for (entry, why) in [
        (
            format!("secret/{p}/odd"),
            "key \"not-a-name\" is not a variable name",
        ),
        (
            format!("secret/{p}/clash"),
            "key \"HOME\" names a variable the container already has",
        ),
        // Whoever writes a secret chooses its values, not the app's code.
        (
            format!("secret/{p}/loader"),
            "key \"LD_PRELOAD\" is a dynamic loader variable (LD_*)",
        ),
    ] {
        let env = login_env(
            &pod,
            &[
                ("VAULT_ENV_FROM_PATH", &entry),
                ("HOME", "/home/app"),
                ("ALLOW_FAIL", "true"),
            ],
        );
        let (out, _) = wrap(&env, &[]);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(
            log.contains(&format!("VAULT_ENV_FROM_PATH: {entry}: {why}")),
            "{log}"
        );
    }
}

#[test]
fn vault_login_hands_the_token_to_the_app() {
    let s = stack();
    let (pod, p) = pod_with_paths("");
    s.kv_put("secret", &format!("{p}/a"), json!({"x": "v-kept"}));
    let env = login_env(
        &pod,
        &[
            ("VAULT_TOKEN", "vault:login"),
            ("X", &format!("vault:secret/data/{p}/a#x")),
        ],
    );
    // The app uses the token, then revokes it itself.
    let app = r#"curl -s -o /dev/null -w 'lookup %{http_code}\n' -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/auth/token/lookup-self"
curl -s -o /dev/null -w 'revoke %{http_code}\n' -X POST -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/auth/token/revoke-self""#;
    let out = command(ENV, env.iter().cloned())
        .args(["--", "/bin/sh", "-c", app])
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("lookup 200") && stdout.contains("revoke 204"),
        "{stdout}"
    );
    assert!(!log.contains("revoked the wrapper's token"), "{log}");
    assert!(log.contains("handed to the app as VAULT_TOKEN"), "{log}");
}

#[test]
fn a_malformed_reference_is_refused_without_showing_it() {
    let s = stack();
    let env: Vec<(String, String)> = [
        ("VAULT_ADDR", s.get("VAULT_ADDR")),
        ("VAULT_ROLE", "r"),
        ("DB_PASSWORD", "vault:hunter2-literal-password"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (out, _) = wrap(&env, &[]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("configuration error: DB_PASSWORD: starts with vault: but is not a reference"),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
    assert!(out.stdout.is_empty());
}

#[test]
fn install_copies_itself_atomically_with_mode_0555() {
    let dir = std::env::temp_dir().join(unique("vk-env-install"));
    std::fs::create_dir_all(&dir).unwrap();
    // Twice: an init container that runs again replaces the copy.
    for _ in 0..2 {
        let out = command(ENV, [("PATH", "/bin")])
            .args(["--install", dir.to_str().unwrap()])
            .output()
            .unwrap();
        let log = stderr(&out);
        assert!(out.status.success(), "{log}");
        assert!(
            log.contains(&format!("installed {}/vault-kubernetes-env", dir.display())),
            "{log}"
        );
    }
    let installed = dir.join("vault-kubernetes-env");
    assert_eq!(mode(&installed), 0o555);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(ENV).unwrap()
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary left"
    );
    let out = command(installed.to_str().unwrap(), [("PATH", "/bin")])
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("vault-kubernetes-env "));
    // A directory that is not there: one line, exit 1.
    let out = command(ENV, [("PATH", "/bin")])
        .args(["--install", dir.join("nope").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a directory"));
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_while_logging_in_stops_it_at_once() {
    let (pod, p) = pod_with_paths("");
    // A Vault that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    let env = login_env(
        &pod,
        &[
            ("VAULT_ADDR", &addr),
            ("X", &format!("vault:secret/data/{p}/a#x")),
        ],
    );
    let child = command(ENV, env.iter().cloned())
        .args(["--", "/bin/sh", "-c", "echo app-ran"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = stop_with_sigterm(child);
    assert!(out.stdout.is_empty(), "the app ran");
}

#[test]
fn no_reference_means_no_vault_at_all() {
    // Nothing to resolve: the command runs at once, no Vault needed.
    let (out, _) = wrap(
        &[("PATH".into(), "/bin".into()), ("A".into(), "plain".into())],
        &["A"],
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(parse(&out.stdout).digests["A"], Some(sha256(b"plain")));
    assert!(!log.contains("vault"), "{log}");
}

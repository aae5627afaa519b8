//! Termination messages and Events (docs/events.md) against the real stack:
//! the programs run as processes with a pod's environment, the Events they
//! record are read back from the API server, and the termination message
//! from the file `TERMINATION_MESSAGE_PATH` names.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use vault_kubernetes::http::Method;

/// A pod with a KV area of its own, readable through a policy of its own
/// that a test can take away, and a token from the authenticator.
struct Fixture {
    pod: Pod,
    base: String,
    policy: String,
}

impl Fixture {
    fn new(events_rbac: bool) -> Fixture {
        let base = unique("ev");
        let policy = format!("p-{base}");
        let f = Fixture {
            pod: {
                stack().policy(&policy, &readable(&base));
                Pod::new(RoleOptions {
                    policies: &[policy.as_str()],
                    ..Default::default()
                })
            },
            base,
            policy,
        };
        if events_rbac {
            grant_events(&f.pod.namespace, &f.pod.service_account);
        }
        let out = run(AUTHENTICATOR, f.pod.env());
        assert!(out.status.success(), "{}", stderr(&out));
        f
    }

    /// The pod's environment with the downward-API variables of a pod
    /// named `pod` (its uid made up: the Event needs no real pod).
    fn env(&self, pod: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let uid = format!("00000000-0000-4000-8000-{:012}", std::process::id());
        let mut changes = vec![
            ("POD_NAME", pod),
            ("POD_NAMESPACE", self.pod.namespace.as_str()),
            ("POD_UID", uid.as_str()),
        ];
        changes.extend_from_slice(extra);
        with(&self.pod.env(), &changes)
    }

    fn forbid(&self) {
        stack().policy(
            &self.policy,
            "path \"secret/data/nothing-here\" { capabilities = [\"read\"] }",
        );
    }
}

fn readable(base: &str) -> String {
    format!(
        "path \"secret/data/{base}/*\" {{ capabilities = [\"read\"] }}\n\
         path \"secret/metadata/{base}/*\" {{ capabilities = [\"list\"] }}\n"
    )
}

/// The Role docs/events.md asks for: create and patch on events.k8s.io Events.
pub fn grant_events(namespace: &str, sa: &str) {
    let s = stack();
    s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"), Some(json!({
        "apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"events"},
        "rules":[{"apiGroups":["events.k8s.io"],"resources":["events"],"verbs":["create","patch"]}]})));
    s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"), Some(json!({
        "apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"events"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"events"},
        "subjects":[{"kind":"ServiceAccount","name":sa,"namespace":namespace}]})));
}

/// Every Event of the namespace (events.k8s.io/v1), recorded for the log scan.
fn events(namespace: &str) -> Vec<Value> {
    let list = stack().kube(
        Method::Get,
        &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
        None,
    );
    let items = list["items"].as_array().cloned().unwrap_or_default();
    for e in &items {
        record_status(&format!("event {}: {}", e["reason"], e["note"]));
    }
    items
}

fn with_reason<'a>(events: &'a [Value], reason: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["reason"] == reason).collect()
}

fn count(e: &Value) -> u64 {
    e["series"]["count"].as_u64().unwrap_or(1)
}

fn spawn(bin: &str, env: Vec<(String, String)>) -> Child {
    command(bin, env).stderr(Stdio::piped()).spawn().unwrap()
}

fn last_message(log: &str) -> &str {
    // `YYYY/MM/DD HH:MM:SS ` then the message.
    log.lines().last().unwrap_or("").get(20..).unwrap_or("")
}

fn termination_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("termination-log");
    std::fs::write(&path, "").unwrap();
    path
}

#[test]
fn a_failed_login_leaves_its_error_line_as_termination_message() {
    let pod = Pod::new(RoleOptions::default());
    let file = termination_file(&pod.dir);
    let out = run(
        AUTHENTICATOR,
        with(
            &pod.env(),
            &[
                ("VAULT_ROLE", "no-such-role"),
                ("LOGIN_TIMEOUT", "2s"),
                ("TERMINATION_MESSAGE_PATH", file.to_str().unwrap()),
            ],
        ),
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let message = std::fs::read_to_string(&file).unwrap();
    record_status(&message);
    assert_eq!(message, last_message(&log), "{log}");
    assert!(message.contains("no-such-role"), "{message}");
    let jwt = std::fs::read_to_string(pod.dir.join("sa/token")).unwrap();
    assert!(!message.contains(jwt.trim()), "{message}");
}

#[test]
fn a_configuration_error_is_a_termination_message_too() {
    let dir = std::env::temp_dir().join(unique("vk-term"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = termination_file(&dir);
    let out = run(
        SYNCHRONIZER,
        [
            ("VAULT_TOKEN_PATH", "/nonexistent/token"),
            ("TERMINATION_MESSAGE_PATH", file.to_str().unwrap()),
        ],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let message = std::fs::read_to_string(&file).unwrap();
    assert!(message.contains("VAULT_SECRETS"), "{message}");
    assert_eq!(message, last_message(&log));
    // A long message is cut at the kubelet's 4096 bytes, on a character boundary.
    let long = format!("secret/{}", "é".repeat(3000));
    let out = run(
        SYNCHRONIZER,
        [
            ("VAULT_TOKEN_PATH", "/nonexistent/token"),
            ("VAULT_SECRETS", long.as_str()),
            ("SECRET_PREFIX", "Bad Prefix"),
            ("TERMINATION_MESSAGE_PATH", file.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = std::fs::read(&file).unwrap();
    assert!(message.len() <= 4096, "{}", message.len());
    assert!(String::from_utf8(message).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_termination_file_is_created_and_a_bad_one_changes_nothing() {
    let dir = std::env::temp_dir().join(unique("vk-term"));
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    let missing = dir.join("missing");
    for path in [missing.clone(), dir.join("a-directory"), "/dev/null".into()] {
        let out = run(
            SYNCHRONIZER,
            [
                ("VAULT_TOKEN_PATH", "/nonexistent/token"),
                ("TERMINATION_MESSAGE_PATH", path.to_str().unwrap()),
            ],
        );
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        // One line: the error itself, nothing about the file.
        assert_eq!(log.lines().count(), 1, "{log}");
    }
    assert!(!missing.exists(), "the file was created");
    // A successful run leaves the file as it was.
    let pod = Pod::new(RoleOptions::default());
    let file = termination_file(&pod.dir);
    let out = run(
        AUTHENTICATOR,
        with(
            &pod.env(),
            &[("TERMINATION_MESSAGE_PATH", file.to_str().unwrap())],
        ),
    );
    assert_ok(&out);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sidecar_failing_every_cycle_bumps_one_event() {
    let f = Fixture::new(true);
    stack().kv_put(
        "secret",
        &format!("{}/app", f.base),
        json!({"v": "event-value"}),
    );
    let child = spawn(
        SYNCHRONIZER,
        f.env(
            "sidecar-pod",
            &[
                ("VAULT_SECRETS", &format!("secret/{}/app", f.base)),
                ("SYNC_INTERVAL", "1s"),
            ],
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || f
        .pod
        .secret("app")
        .is_some()));
    f.forbid();
    // The first failure creates the Event, the second patches its series
    // at once, later ones after 15 s: one Event whose count keeps growing.
    let grown = wait_until(Duration::from_secs(40), || {
        with_reason(&events(&f.pod.namespace), "SyncFailed")
            .first()
            .is_some_and(|e| count(e) >= 5)
    });
    let out = stop_with_sigterm(child);
    let log = stderr(&out);
    let all = events(&f.pod.namespace);
    assert!(grown, "{all:#?}\n{log}");
    let failed = with_reason(&all, "SyncFailed");
    assert_eq!(failed.len(), 1, "one Event, not one per cycle: {all:#?}");
    let e = failed[0];
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["action"], "Synchronize");
    assert_eq!(e["reportingController"], "vault-kubernetes-synchronizer");
    assert_eq!(e["reportingInstance"], "sidecar-pod");
    assert_eq!(e["regarding"]["kind"], "Pod");
    assert_eq!(e["regarding"]["name"], "sidecar-pod");
    assert_eq!(e["regarding"]["namespace"], f.pod.namespace.as_str());
    let note = e["note"].as_str().unwrap();
    assert!(
        note.contains("403") || note.contains("permission denied"),
        "{note}"
    );
    assert!(!note.contains("event-value"));
    // The note is the error of the log line "synchronization failed, ...".
    assert!(log.lines().any(|l| l.contains(note)), "{note}\n{log}");
    // Three cycles without a failure: no other Warning.
    assert!(
        all.iter()
            .all(|e| e["type"] != "Warning" || e["reason"] == "SyncFailed"),
        "{all:#?}"
    );
}

#[test]
fn pruning_and_drift_repair_are_normal_events() {
    let f = Fixture::new(true);
    let s = stack();
    s.kv_put(
        "secret",
        &format!("{}/kept", f.base),
        json!({"v": "kept-value"}),
    );
    s.kv_put(
        "secret",
        &format!("{}/dropped", f.base),
        json!({"v": "dropped-value"}),
    );
    let both = format!("secret/{0}/kept,secret/{0}/dropped", f.base);
    let out = run(SYNCHRONIZER, f.env("one-shot", &[("VAULT_SECRETS", &both)]));
    assert!(out.status.success(), "{}", stderr(&out));
    // One-shot runs (init containers) record no Events.
    assert_eq!(events(&f.pod.namespace), Vec::<Value>::new());
    // A hand edit of `kept`, and `dropped` no longer listed.
    let mut kept = f.pod.secret("kept").unwrap();
    kept["data"] = json!({"v": "aGFuZC1lZGl0"});
    s.kube(
        Method::Put,
        &format!("/api/v1/namespaces/{}/secrets/kept", f.pod.namespace),
        Some(kept),
    );
    let child = spawn(
        SYNCHRONIZER,
        f.env(
            "pruning-pod",
            &[
                ("VAULT_SECRETS", &format!("secret/{}/kept", f.base)),
                ("SYNC_INTERVAL", "1s"),
            ],
        ),
    );
    let seen = wait_until(Duration::from_secs(15), || {
        let all = events(&f.pod.namespace);
        !with_reason(&all, "SecretsPruned").is_empty()
            && !with_reason(&all, "DriftRepaired").is_empty()
    });
    // Later cycles change nothing: no further Event.
    std::thread::sleep(Duration::from_secs(3));
    let out = stop_with_sigterm(child);
    let all = events(&f.pod.namespace);
    assert!(seen, "{all:#?}\n{}", stderr(&out));
    let pruned = with_reason(&all, "SecretsPruned");
    assert_eq!(pruned[0]["type"], "Normal");
    assert_eq!(pruned[0]["action"], "Prune");
    let note = pruned[0]["note"].as_str().unwrap();
    assert!(note.ends_with(": dropped"), "{note}");
    let repaired = with_reason(&all, "DriftRepaired");
    assert_eq!(repaired[0]["type"], "Normal");
    assert_eq!(repaired[0]["action"], "Repair");
    let note = repaired[0]["note"].as_str().unwrap();
    assert!(note.ends_with(": kept"), "{note}");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().all(|e| e["series"].is_null()), "{all:#?}");
}

#[test]
fn without_events_rbac_one_warning_and_the_sync_goes_on() {
    let f = Fixture::new(false);
    stack().kv_put(
        "secret",
        &format!("{}/app", f.base),
        json!({"v": "no-rbac-value"}),
    );
    let child = spawn(
        SYNCHRONIZER,
        f.env(
            "no-rbac-pod",
            &[
                ("VAULT_SECRETS", &format!("secret/{}/app", f.base)),
                ("SYNC_INTERVAL", "1s"),
            ],
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || f
        .pod
        .secret("app")
        .is_some()));
    // Failing cycles would record Events: still no second warning.
    f.forbid();
    std::thread::sleep(Duration::from_secs(4));
    let out = stop_with_sigterm(child);
    let log = stderr(&out);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("Events")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARNING"), "{log}");
    assert!(warnings[0].contains("create"), "{log}");
    assert!(log.matches("synchronization failed").count() >= 2, "{log}");
    assert_eq!(events(&f.pod.namespace), Vec::<Value>::new());
}

#[test]
fn the_renewer_reports_failed_renewals_and_new_logins() {
    let f = Fixture::new(true);
    // Renewals every few seconds, so one comes soon after the revocation.
    let policies = [f.policy.as_str()];
    f.pod.vault_role(&RoleOptions {
        policies: &policies,
        ttl: "6s",
        max_ttl: "1h",
        ..Default::default()
    });
    let out = run(AUTHENTICATOR, f.pod.env());
    assert!(out.status.success(), "{}", stderr(&out));
    let token = std::fs::read_to_string(f.pod.token_path()).unwrap();
    let child = spawn(RENEWER, f.env("renewer-pod", &[("VAULT_REAUTH", "true")]));
    std::thread::sleep(Duration::from_secs(1));
    // Revoked behind its back: the next renewal fails, a new login follows.
    stack().vault(
        Method::Post,
        "auth/token/revoke",
        Some(json!({ "token": token.trim() })),
    );
    let seen = wait_until(Duration::from_secs(20), || {
        let all = events(&f.pod.namespace);
        !with_reason(&all, "RenewalFailed").is_empty()
            && !with_reason(&all, "Reauthenticated").is_empty()
    });
    term(&child);
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    let all = events(&f.pod.namespace);
    assert!(seen, "{all:#?}\n{log}");
    let failed = with_reason(&all, "RenewalFailed")[0];
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["action"], "Renew");
    let note = failed["note"].as_str().unwrap();
    assert!(note.starts_with("failed to renew token"), "{note}");
    let e = with_reason(&all, "Reauthenticated")[0];
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["action"], "Authenticate");
    assert_eq!(e["reportingController"], "vault-kubernetes-token-renewer");
    let note = e["note"].as_str().unwrap();
    assert!(
        note.starts_with("logged in again: failed to renew token"),
        "{note}"
    );
    assert!(!note.contains(token.trim()), "{note}");
}

#[test]
fn the_renewer_reports_a_failed_reauthentication_before_it_exits() {
    let f = Fixture::new(true);
    let token = std::fs::read_to_string(f.pod.token_path()).unwrap();
    let child = spawn(
        RENEWER,
        f.env(
            "renewer-pod",
            &[("VAULT_REAUTH", "true"), ("LOGIN_TIMEOUT", "2s")],
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    // The role is gone and the token revoked: the new login fails, the
    // program exits 1, and the Event was sent before.
    stack().vault(
        Method::Delete,
        &format!("auth/kubernetes/role/{}", f.pod.role),
        None,
    );
    stack().vault(
        Method::Post,
        "auth/token/revoke",
        Some(json!({ "token": token.trim() })),
    );
    std::fs::remove_file(f.pod.token_path()).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let all = events(&f.pod.namespace);
    let failed = with_reason(&all, "ReauthenticationFailed");
    assert_eq!(failed.len(), 1, "{all:#?}\n{log}");
    assert_eq!(failed[0]["type"], "Warning");
    assert_eq!(failed[0]["note"].as_str().unwrap(), last_message(&log));
}

fn term(child: &Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    );
}

/// Every container of ours in the shipped manifests (the demo's, and the
/// injector's when it is there) falls back to its log for the termination
/// message, should it die before writing one.
#[test]
fn our_manifests_fall_back_to_logs_on_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["demo/manifests", "deploy/injector"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let image = line.trim_start().trim_start_matches("- ");
                if !(image.starts_with("image:") && line.contains("IMAGE_TAG")) {
                    continue;
                }
                checked += 1;
                // The container's fields: up to the next list item at its indent or less.
                let indent = line.len() - line.trim_start().len();
                let block_start = (0..=i)
                    .rev()
                    .find(|&j| lines[j].trim_start().starts_with("- "))
                    .unwrap_or(0);
                let fields = lines[block_start..]
                    .iter()
                    .enumerate()
                    .take_while(|(n, l)| {
                        *n == 0 || l.trim().is_empty() || l.len() - l.trim_start().len() >= indent
                    })
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(
                    fields.contains("terminationMessagePolicy: FallbackToLogsOnError"),
                    "{}: {line}",
                    path.display()
                );
            }
        }
    }
    assert!(checked >= 9, "{checked} containers of ours");
}

//! Failures where Kubernetes users look (docs/events.md), in real pods on
//! the single-node cluster: the termination message of a failed init
//! container, Events on the pod of a failing synchronizer sidecar, and a
//! pod without the Events RBAC that keeps working.
//!
//! Network as in tests/pods.rs: host network, the API server by its
//! loopback address, container logs read from the kubelet's pod log
//! directory (never `kubectl logs`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::*;
use support::*;
use vault_kubernetes::http::Method;

/// [`env`] and the downward-API variables that turn Events on.
fn env_with_pod(pod: &Pod, extra: &[(&str, &str)]) -> Value {
    let mut vars = env(pod, extra);
    let list = vars.as_array_mut().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ] {
        list.push(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}));
    }
    vars
}

/// [`pod_spec`] restarted as in a Deployment (`restartPolicy: Always`),
/// stopped quickly. The termination message policy stays the default
/// (`File`): a message can only come from the program.
fn restarted_spec(init: Vec<Value>, containers: Vec<Value>) -> Value {
    let mut spec = pod_spec(init, containers);
    spec["restartPolicy"] = json!("Always");
    spec["terminationGracePeriodSeconds"] = json!(5);
    spec
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
        let p = get_pod(pod, name).unwrap_or(Value::Null);
        if let Some(v) = done(&p) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "pod {name}: nothing after {secs}s: {:#}\nlogs: {}",
            p["status"],
            all_logs(pod, name)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Our programs' Events about pod `name` (not the kubelet's or the
/// scheduler's), recorded for the log scan.
fn pod_events(pod: &Pod, name: &str) -> Vec<Value> {
    let list = cluster().kube(
        Method::Get,
        &format!("/apis/events.k8s.io/v1/namespaces/{}/events", pod.namespace),
        None,
    );
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .filter(|e| {
            e["reportingController"]
                .as_str()
                .is_some_and(|c| c.starts_with("vault-kubernetes-"))
        })
        .cloned()
        .collect();
    for e in &items {
        record_status(&format!("event {}: {}", e["reason"], e["note"]));
    }
    items
}

fn grant_events(pod: &Pod) {
    let s = cluster();
    let ns = &pod.namespace;
    s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"), Some(json!({
        "apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"events"},
        "rules":[{"apiGroups":["events.k8s.io"],"resources":["events"],"verbs":["create","patch"]}]})));
    s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"), Some(json!({
        "apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"events"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"events"},
        "subjects":[{"kind":"ServiceAccount","name":pod.service_account,"namespace":ns}]})));
}

/// A pod whose token may read `secret/data/<base>/*` through a policy of
/// its own, which [`forbid`] empties.
fn pod_with_policy() -> (Pod, String, String) {
    let base = unique("pev");
    let policy = format!("p-{base}");
    cluster().policy(
        &policy,
        &format!("path \"secret/data/{base}/*\" {{ capabilities = [\"read\"] }}\n"),
    );
    let pod = Pod::new(RoleOptions {
        policies: &[policy.as_str()],
        ..Default::default()
    });
    (pod, base, policy)
}

fn forbid(policy: &str) {
    cluster().policy(
        policy,
        "path \"secret/data/nothing-here\" { capabilities = [\"read\"] }",
    );
}

/// Authenticator, then the synchronizer as a native sidecar every second,
/// then a pause container.
fn sidecar_spec(pod: &Pod, vault_path: &str) -> Value {
    let mut sync = container(
        "vault-synchronizer",
        &image("synchronizer"),
        env_with_pod(
            pod,
            &[("VAULT_SECRETS", vault_path), ("SYNC_INTERVAL", "1s")],
        ),
    );
    sync["restartPolicy"] = json!("Always");
    restarted_spec(
        vec![
            container(
                "vault-authenticator",
                &image("authenticator"),
                env(pod, &[]),
            ),
            sync,
        ],
        vec![container("app", cluster().get("VK_PAUSE_IMAGE"), json!([]))],
    )
}

fn running(p: &Value) -> Option<()> {
    (p["status"]["phase"] == "Running").then_some(())
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
    create_pod(&pod, "auth-fails", restarted_spec(vec![auth], vec![app]));
    let message = wait_for(&pod, "auth-fails", 120, |p| {
        p["status"]["initContainerStatuses"][0]["lastState"]["terminated"]["message"]
            .as_str()
            .map(str::to_string)
    });
    let status = get_pod(&pod, "auth-fails").unwrap_or_default()["status"]["initContainerStatuses"]
        [0]
    .clone();
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

#[test]
fn a_sidecar_whose_vault_path_becomes_forbidden_has_one_growing_event() {
    let (pod, base, policy) = pod_with_policy();
    grant_events(&pod);
    let s = cluster();
    s.kv_put(
        "secret",
        &format!("{base}/app"),
        json!({"v": "pod-event-value"}),
    );
    create_pod(
        &pod,
        "sidecar",
        sidecar_spec(&pod, &format!("secret/{base}/app:app")),
    );
    wait_for(&pod, "sidecar", 120, running);
    assert!(
        wait_until(Duration::from_secs(30), || pod.secret("app").is_some()),
        "{}",
        all_logs(&pod, "sidecar")
    );
    forbid(&policy);
    let found = wait_until(Duration::from_secs(60), || {
        pod_events(&pod, "sidecar")
            .iter()
            .any(|e| e["reason"] == "SyncFailed" && e["series"]["count"].as_u64() >= Some(5))
    });
    let events = pod_events(&pod, "sidecar");
    let log = container_log(&pod, "sidecar", "vault-synchronizer");
    let uid = get_pod(&pod, "sidecar").unwrap_or_default()["metadata"]["uid"].clone();
    delete_pod(&pod, "sidecar");
    assert!(found, "{events:#?}\n{log}");
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "SyncFailed")
        .collect();
    assert_eq!(failed.len(), 1, "one Event, not one per cycle: {events:#?}");
    let e = failed[0];
    assert_eq!(e["type"], "Warning");
    // What `kubectl describe pod` selects on: the pod's kind, name and uid.
    assert_eq!(e["regarding"]["kind"], "Pod");
    assert_eq!(e["regarding"]["uid"], uid);
    assert_eq!(e["reportingController"], "vault-kubernetes-synchronizer");
    let note = e["note"].as_str().unwrap();
    assert!(
        log.lines().filter(|l| l.contains(note)).count() >= 5,
        "{note}\n{log}"
    );
    // The core/v1 view of the same Event, as kubectl describe reads it.
    let core = s.kube(
        Method::Get,
        &format!(
            "/api/v1/namespaces/{}/events?fieldSelector=involvedObject.uid%3D{}",
            pod.namespace,
            uid.as_str().unwrap()
        ),
        None,
    );
    let core: Vec<&Value> = core["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "SyncFailed")
        .collect();
    assert_eq!(core.len(), 1, "{core:#?}");
    assert!(core[0]["series"]["count"].as_u64() >= Some(5), "{core:#?}");
}

#[test]
fn a_pod_without_the_events_rbac_keeps_working_with_one_warning() {
    let (pod, base, policy) = pod_with_policy();
    let s = cluster();
    s.kv_put(
        "secret",
        &format!("{base}/app"),
        json!({"v": "no-rbac-pod-value"}),
    );
    create_pod(
        &pod,
        "no-rbac",
        sidecar_spec(&pod, &format!("secret/{base}/app:app")),
    );
    wait_for(&pod, "no-rbac", 120, running);
    assert!(wait_until(Duration::from_secs(30), || pod
        .secret("app")
        .is_some()));
    // Failures that would be Events: still one warning, and the sidecar runs on.
    forbid(&policy);
    let failing = wait_until(Duration::from_secs(30), || {
        container_log(&pod, "no-rbac", "vault-synchronizer")
            .matches("synchronization failed")
            .count()
            >= 3
    });
    let log = container_log(&pod, "no-rbac", "vault-synchronizer");
    let p = get_pod(&pod, "no-rbac").unwrap_or_default();
    delete_pod(&pod, "no-rbac");
    assert!(failing, "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("Events")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARNING"), "{log}");
    let sidecar = &p["status"]["initContainerStatuses"][1];
    assert_eq!(sidecar["restartCount"], 0, "{sidecar:#}");
    assert_eq!(sidecar["started"], true, "{sidecar:#}");
    assert_eq!(pod_events(&pod, "no-rbac"), Vec::<Value>::new());
}

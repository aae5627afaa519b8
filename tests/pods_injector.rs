//! Injection by annotation (deploy/injector/) in real pods on the
//! single-node cluster of `scripts/stack.sh up --cluster`: the API server's
//! MutatingAdmissionPolicy adds our containers to annotated pods, its
//! ValidatingAdmissionPolicy refuses what could not be injected, and the
//! kubelet runs the result.
//!
//! The policies are applied as a user would (`kubectl apply -f
//! deploy/injector/`), then the ConfigMap gets this cluster's values: the
//! stack's OpenBao, the images imported into containerd (pull policy
//! Never), the API server's loopback address. The pods themselves use the
//! host's network (OpenBao listens on loopback only), as in
//! demo/local/overlay.yaml; nothing dials the `kubernetes` Service's
//! ClusterIP or the node's address: logs are read from the kubelet's pod
//! log directory.

mod support;

use std::process::{Command, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{accessors, audited, busybox, cluster, image, jwt_role, phase};
use support::*;
use vault_kubernetes::http::Method;

const CONFIGMAP: &str = "/api/v1/namespaces/vault-kubernetes/configmaps/vault-kubernetes-injector";
const STATUS: &str = "vault-kubernetes.io/status";
/// A namespace the ConfigMap excludes from injection.
const EXCLUDED: &str = "vk-injector-excluded";

/// The test that removes the ConfigMap takes this for writing; every other
/// test holds it for reading while it creates pods.
static CONFIG: RwLock<()> = RwLock::new(());

fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let s = cluster();
    let mut child = Command::new(format!("{}/kubectl", s.get("VK_BIN")))
        .arg("--kubeconfig")
        .arg(s.get("VK_KUBECONFIG"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// This cluster's differences from deploy/injector/10-configmap.yaml.
fn local_values() -> Value {
    let s = cluster();
    json!({
        "vaultAddr": s.get("VAULT_ADDR"),
        "authenticatorImage": image("authenticator"),
        "tokenRenewerImage": image("token-renewer"),
        "synchronizerImage": image("synchronizer"),
        "envImage": image("env"),
        "imagePullPolicy": "Never",
        "kubernetesServiceHost": "127.0.0.1",
        "kubernetesServicePort": s.get("KUBERNETES_SERVICE_PORT"),
        "excludedNamespaces": format!("some-other, {EXCLUDED}"),
    })
}

/// Applies deploy/injector/ once per test process, sets the ConfigMap's
/// local values and waits until the API server injects with them.
fn injector() -> RwLockReadGuard<'static, ()> {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/injector");
        let out = kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", dir],
            None,
        );
        assert_ok(&out);
        let s = cluster();
        let mut cm = s.kube(Method::Get, CONFIGMAP, None);
        for (k, v) in local_values().as_object().unwrap() {
            cm["data"][k] = v.clone();
        }
        s.kube(Method::Put, CONFIGMAP, Some(cm));
        let _ = s.try_kube(
            Method::Post,
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": EXCLUDED}})),
        );
        // Pods there use the default service account the controller adds.
        let sa = format!("/api/v1/namespaces/{EXCLUDED}/serviceaccounts/default");
        assert!(
            wait_until(Duration::from_secs(30), || s
                .try_kube(Method::Get, &sa, None)
                .is_ok()),
            "no {sa}"
        );
        wait_injecting();
    });
    CONFIG.read().unwrap_or_else(|e| e.into_inner())
}

/// Polls dry-run annotated pods until the mutating policy injects one and
/// the validating policy refuses a bad role (the API server picks up
/// policies, bindings and parameters within seconds, each on its own).
fn wait_injecting() {
    let end = Instant::now() + Duration::from_secs(60);
    let dry_run = |role: &str| {
        cluster().try_kube(
            Method::Post,
            "/api/v1/namespaces/default/pods?dryRun=All",
            Some(pod_object(
                "probe",
                annotations(&[("role", role)]),
                json!({"containers": [app("true")]}),
            )),
        )
    };
    loop {
        let injects = dry_run("probe");
        let refuses = dry_run("bad role!");
        let ready = matches!(&injects, Ok(p) if p["metadata"]["annotations"][STATUS] == "injected")
            && matches!(&refuses, Err(e) if e.to_string().contains("ValidatingAdmissionPolicy"));
        if ready {
            return;
        }
        assert!(
            Instant::now() < end,
            "the injector is not ready after 60s: {injects:?} {refuses:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `vault-kubernetes.io/<name>` annotations.
fn annotations(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| (format!("vault-kubernetes.io/{k}"), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A restricted busybox container running `script`.
fn app(script: &str) -> Value {
    json!({
        "name": "app", "image": busybox(), "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
    })
}

/// A pod spec with only the app's containers, on the host's network (the
/// local cluster's one difference, from demo/local/overlay.yaml).
fn pod_spec(containers: Vec<Value>) -> Value {
    json!({
        "serviceAccountName": "app",
        "hostNetwork": true,
        "enableServiceLinks": false,
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": containers,
    })
}

fn pod_object(name: &str, annotations: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "annotations": annotations}, "spec": spec})
}

fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

fn get_pod(ns: &str, name: &str) -> Option<Value> {
    cluster()
        .try_kube(Method::Get, &format!("{}/{name}", pods_path(ns)), None)
        .ok()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// Polls `path` until `done` holds; panics with the object and the pods'
/// logs after `secs`.
fn wait_for(ns: &str, path: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = cluster()
            .try_kube(Method::Get, path, None)
            .unwrap_or(Value::Null);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{path} not there after {secs}s: {:#}\nlogs: {}",
            v["status"],
            logs(ns, "")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits for pod `name` to end, asserts it Succeeded and returns it with
/// its pods' logs (see [`logs`]).
fn succeeded(ns: &str, name: &str, secs: u64) -> (Value, String) {
    let p = wait_for(ns, &format!("{}/{name}", pods_path(ns)), secs, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    let log = logs(ns, name);
    assert_eq!(phase(&p), "Succeeded", "{log}");
    (p, log)
}

/// Log lines of the containers of `ns`'s pods whose name starts with
/// `pod`, from the kubelet's pod log directory, as `<container>: <line>`.
fn logs(ns: &str, pod: &str) -> String {
    let dir = std::path::Path::new(cluster().get("VK_POD_LOGS_DIR"));
    let prefix = format!("{ns}_{pod}");
    let mut out = String::new();
    let mut pods: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    pods.sort();
    for p in pods {
        for c in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let name = c.file_name().to_string_lossy().into_owned();
            let mut files: Vec<_> = std::fs::read_dir(c.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| f.path())
                .collect();
            files.sort();
            for f in files {
                for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                    // CRI log lines: <time> <stream> <P|F> <message>
                    let msg = line.splitn(4, ' ').nth(3).unwrap_or(line);
                    out += &format!("{name}: {msg}\n");
                }
            }
        }
    }
    out
}

fn wait_audited(pod: &Pod, path: &str, count: usize, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while audited(pod, path) < count {
        assert!(
            Instant::now() < end,
            "fewer than {count} {path} in OpenBao's audit log after {secs}s: {}",
            logs(&pod.namespace, "")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The pod-security `restricted` fields every injected container carries.
fn assert_restricted(c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{c:#}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{c:#}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{c:#}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{c:#}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{c:#}");
    assert_eq!(
        c["terminationMessagePolicy"], "FallbackToLogsOnError",
        "{c:#}"
    );
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{c:#}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{c:#}");
}

#[test]
fn annotated_deployment_is_injected_runs_and_renews() {
    let _config = injector();
    let pod = Pod::new(RoleOptions {
        ttl: "6s",
        max_ttl: "1h",
        ..Default::default()
    });
    let ns = &pod.namespace;
    let mut spec = pod_spec(vec![app("exec sleep 3600")]);
    spec["restartPolicy"] = json!("Always");
    spec["terminationGracePeriodSeconds"] = json!(30);
    let s = cluster();
    let deployments = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    s.kube(
        Method::Post,
        &deployments,
        Some(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"},
                                               "annotations": annotations(&[("role", &pod.role)])},
                                  "spec": spec}},
        })),
    );
    let list = wait_for(ns, &pods_path(ns), 120, |l| {
        l["items"].as_array().is_some_and(|items| {
            items.len() == 1
                && phase(&items[0]) == "Running"
                && items[0]["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(|c| c["ready"] == true))
        })
    });
    let p = &list["items"][0];
    assert_eq!(p["metadata"]["annotations"][STATUS], "injected");
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        [
            "vault-kubernetes-authenticator",
            "vault-kubernetes-token-renewer"
        ]
    );
    let renewer = &p["spec"]["initContainers"][1];
    assert_eq!(renewer["restartPolicy"], "Always", "native sidecar");
    for c in p["spec"]["initContainers"].as_array().unwrap() {
        assert_restricted(c);
    }
    let app = &p["spec"]["containers"][0];
    assert!(
        app["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "VAULT_TOKEN_PATH" && e["value"] == "/home/vault/.vault-token"),
        "{app:#}"
    );
    assert!(
        app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "vault-kubernetes-token" && m["readOnly"] == true),
        "{app:#}"
    );
    // One login, then the renewer keeps the 6 s token alive.
    wait_audited(&pod, "auth/token/renew-self", 2, 40);
    assert_eq!(
        audited(&pod, "auth/kubernetes/login"),
        1,
        "{}",
        logs(ns, "")
    );
    let log = logs(ns, "web");
    assert!(
        log.contains("vault-kubernetes-authenticator: ")
            && log.contains("successfully authenticated"),
        "{log}"
    );

    // Deleting the Deployment stops the pod: the sidecar revokes its token.
    s.kube(
        Method::Delete,
        &format!("{deployments}/web?propagationPolicy=Foreground"),
        None,
    );
    wait_audited(&pod, "auth/token/revoke-self", 1, 60);
}

#[test]
fn annotated_job_completes_and_revokes_its_token() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let ns = &pod.namespace;
    let spec = pod_spec(vec![app(
        "test -s \"$VAULT_TOKEN_PATH\" && echo work done with a token",
    )]);
    let jobs = format!("/apis/batch/v1/namespaces/{ns}/jobs");
    cluster().kube(
        Method::Post,
        &jobs,
        Some(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job"},
            "spec": {"backoffLimit": 0,
                     "template": {"metadata": {"annotations": annotations(&[("role", &pod.role)])},
                                  "spec": spec}},
        })),
    );
    let job = wait_for(ns, &format!("{jobs}/job"), 120, |j| {
        let conditions = j["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let failed = conditions
            .iter()
            .any(|c| c["type"] == "Failed" && c["status"] == "True");
        assert!(!failed, "job failed: {:#}\n{}", j["status"], logs(ns, ""));
        conditions
            .iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    });
    assert_eq!(job["status"]["succeeded"], 1);
    let log = logs(ns, "job");
    assert!(log.contains("app: work done with a token"), "{log}");
    // The native sidecar ended after the work and revoked the token.
    wait_audited(&pod, "auth/token/revoke-self", 1, 30);
}

/// The app runs as uid 1000, the injected containers as 65534: with the
/// pod's fsGroup the token is 0640 in the pod's group, without it 0644.
#[test]
fn app_running_as_another_uid_reads_the_token() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let ns = &pod.namespace;
    let script = "id; stat -c 'mode %a group %g' \"$VAULT_TOKEN_PATH\"; \
                  test \"$(wc -c < \"$VAULT_TOKEN_PATH\")\" -gt 20 && echo token readable";
    for (name, fs_group) in [("with-fsgroup", Some(2000)), ("without-fsgroup", None)] {
        let mut app = app(script);
        app["securityContext"]["runAsUser"] = json!(1000);
        let mut spec = pod_spec(vec![app]);
        if let Some(g) = fs_group {
            spec["securityContext"]["fsGroup"] = json!(g);
        }
        // Token only: the authenticator as the one init container.
        let ann = annotations(&[("role", &pod.role), ("token-renew", "false")]);
        cluster().kube(
            Method::Post,
            &pods_path(ns),
            Some(pod_object(name, ann, spec)),
        );
    }
    for (name, mode) in [
        ("with-fsgroup", "mode 640 group 2000"),
        ("without-fsgroup", "mode 644 group 65534"),
    ] {
        let (p, log) = succeeded(ns, name, 120);
        assert_eq!(
            names(&p["spec"]["initContainers"]),
            ["vault-kubernetes-authenticator"]
        );
        assert!(log.contains("app: uid=1000"), "{log}");
        assert!(log.contains(&format!("app: {mode}")), "{log}");
        assert!(log.contains("app: token readable"), "{log}");
    }
}

/// Secrets as files through annotations: the synchronizer's first copy
/// before the app starts, then its native sidecar follows a change.
#[test]
fn files_from_vault_through_annotations() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let ns = &pod.namespace;
    let s = cluster();
    let path = format!("k8s/{ns}/db");
    s.kv_put(
        "secret",
        &path,
        json!({"password": "first-value-from-openbao"}),
    );
    let mut app = app(
        "f=/etc/app/secrets/db/password; stat -c 'mode %a' \"$(readlink -f $f)\"; \
         test \"$(cat $f)\" = first-value-from-openbao && echo first value; \
         i=0; while [ $i -lt 120 ]; do \
           test \"$(cat $f)\" = second-value-from-openbao && echo second value && exit 0; \
           sleep 0.5; i=$((i+1)); done; exit 1",
    );
    app["securityContext"]["runAsUser"] = json!(1000);
    let ann = annotations(&[
        ("role", &pod.role),
        ("secrets", &format!("secret/{path}")),
        ("secrets-dir", "/etc/app/secrets"),
        ("secrets-interval", "2s"),
        ("containers", "app"),
    ]);
    s.kube(
        Method::Post,
        &pods_path(ns),
        Some(pod_object("files", ann, pod_spec(vec![app]))),
    );
    let end = Instant::now() + Duration::from_secs(120);
    while !logs(ns, "files").contains("app: first value") {
        assert!(
            Instant::now() < end,
            "no first value: {}",
            logs(ns, "files")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    s.kv_put(
        "secret",
        &path,
        json!({"password": "second-value-from-openbao"}),
    );
    let (p, log) = succeeded(ns, "files", 60);
    assert!(log.contains("app: mode 444"), "{log}");
    assert!(log.contains("app: second value"), "{log}");
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        [
            "vault-kubernetes-authenticator",
            "vault-kubernetes-synchronizer",
            "vault-kubernetes-token-renewer",
            "vault-kubernetes-synchronizer-sidecar"
        ]
    );
    // The file target reads nothing from Kubernetes: no Secret written.
    assert_eq!(pod.secret_names(), Vec::<String>::new());
}

#[test]
fn updated_and_recreated_pods_are_not_injected_twice() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let ns = &pod.namespace;
    let s = cluster();
    let ann = annotations(&[("role", &pod.role), ("token-renew", "false")]);
    let created = s.kube(
        Method::Post,
        &pods_path(ns),
        Some(pod_object("first", ann, pod_spec(vec![app("sleep 2")]))),
    );
    let spec_names = |p: &Value| {
        (
            names(&p["spec"]["initContainers"])
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            names(&p["spec"]["volumes"]).len(),
            p["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .map_or(0, Vec::len),
            p["spec"]["containers"][0]["env"]
                .as_array()
                .map_or(0, Vec::len),
        )
    };
    let injected = spec_names(&created);
    assert_eq!(injected.0, ["vault-kubernetes-authenticator"]);

    // An UPDATE (a new label) leaves the containers as they are.
    // (Read and write again while the kubelet's status updates conflict.)
    let mut updated = Value::Null;
    let done = wait_until(Duration::from_secs(30), || {
        let mut current = get_pod(ns, "first").unwrap();
        current["metadata"]["labels"] = json!({"updated": "yes"});
        let put = s.try_kube(
            Method::Put,
            &format!("{}/first", pods_path(ns)),
            Some(current),
        );
        put.map(|p| updated = p).is_ok()
    });
    assert!(done, "no UPDATE of pod first in 30s");
    assert_eq!(updated["metadata"]["labels"]["updated"], "yes");
    assert_eq!(spec_names(&updated), injected);

    // The injected spec created again, as `kubectl get -o yaml` and
    // `kubectl create -f` would: the status annotation and the injected
    // containers are there, so nothing is added.
    let mut again = get_pod(ns, "first").unwrap();
    again["metadata"] = json!({"name": "again", "annotations": again["metadata"]["annotations"]});
    again.as_object_mut().unwrap().remove("status");
    again["spec"].as_object_mut().unwrap().remove("nodeName");
    let recreated = s.kube(Method::Post, &pods_path(ns), Some(again.clone()));
    assert_eq!(spec_names(&recreated), injected);

    // Without the status annotation, the injected containers alone are
    // enough to leave it alone.
    again["metadata"]["name"] = json!("again-without-status");
    again["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(STATUS);
    let recreated = s.kube(Method::Post, &pods_path(ns), Some(again));
    assert_eq!(spec_names(&recreated), injected);

    succeeded(ns, "first", 120);
}

#[test]
fn unannotated_pods_kube_system_and_excluded_namespaces_are_untouched() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let s = cluster();
    let dry_run = |ns: &str, ann: Value| {
        s.kube(
            Method::Post,
            &format!("{}?dryRun=All", pods_path(ns)),
            Some(pod_object(
                "plain",
                ann,
                json!({"containers": [app("true")]}),
            )),
        )
    };
    let untouched = |p: &Value| {
        assert!(p["spec"]["initContainers"].is_null(), "{p:#}");
        assert!(
            names(&p["spec"]["volumes"])
                .iter()
                .all(|v| v.starts_with("kube-api-access-")),
            "{p:#}"
        );
        assert!(p["spec"]["containers"][0]["env"].is_null(), "{p:#}");
    };
    let plain = dry_run(&pod.namespace, json!({"other": "annotation"}));
    untouched(&plain);
    assert!(plain["metadata"]["annotations"][STATUS].is_null());

    let system = dry_run("kube-system", annotations(&[("role", &pod.role)]));
    untouched(&system);
    assert!(system["metadata"]["annotations"][STATUS].is_null());

    // A namespace of the ConfigMap's excludedNamespaces: admitted, with
    // the reason recorded.
    let excluded = dry_run(EXCLUDED, annotations(&[("role", &pod.role)]));
    untouched(&excluded);
    let status = excluded["metadata"]["annotations"][STATUS]
        .as_str()
        .unwrap();
    assert!(
        status.starts_with(&format!("skipped: namespace {EXCLUDED} is excluded")),
        "{status}"
    );
}

#[test]
fn missing_configmap_refuses_annotated_pods_with_the_reason_and_admits_others() {
    drop(injector());
    // Alone: every other test of this file needs the ConfigMap.
    let _alone = CONFIG.write().unwrap_or_else(|e| e.into_inner());
    let pod = Pod::new(RoleOptions::default());
    let ns = &pod.namespace;
    let s = cluster();
    let saved = s.kube(Method::Get, CONFIGMAP, None);
    s.kube(Method::Delete, CONFIGMAP, None);
    let restore = || {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "vault-kubernetes-injector"}, "data": saved["data"]});
        s.kube(
            Method::Post,
            "/api/v1/namespaces/vault-kubernetes/configmaps",
            Some(cm),
        );
        wait_injecting();
    };
    let annotated = pod_object(
        "annotated",
        annotations(&[("role", &pod.role)]),
        pod_spec(vec![app("true")]),
    );
    let mut refusal = String::new();
    let refused = wait_until(Duration::from_secs(30), || {
        match s.try_kube(Method::Post, &pods_path(ns), Some(annotated.clone())) {
            Ok(_) => {
                // Created before the API server saw the deletion: try again.
                let _ = s.try_kube(
                    Method::Delete,
                    &format!("{}/annotated", pods_path(ns)),
                    None,
                );
                false
            }
            Err(e) => {
                refusal = e.to_string();
                true
            }
        }
    });
    let plain = s.try_kube(
        Method::Post,
        &pods_path(ns),
        Some(pod_object("plain", json!({}), pod_spec(vec![app("true")]))),
    );
    restore();
    assert!(refused, "annotated pod admitted without the ConfigMap");
    assert!(
        refusal.contains("ValidatingAdmissionPolicy 'vault-kubernetes-injector'")
            && refusal.contains(
                "asks for Vault injection (vault-kubernetes.io/role) but was not injected"
            )
            && refusal
                .contains("ConfigMap vault-kubernetes/vault-kubernetes-injector, are missing"),
        "{refusal}"
    );
    let plain = plain.expect("a pod that asks for nothing is created without the ConfigMap");
    assert!(plain["spec"]["initContainers"].is_null(), "{plain:#}");
}

#[test]
fn bad_annotation_values_are_refused_at_admission_with_the_reason() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("role", "no such role!")],
            "vault-kubernetes.io/role: \"no such role!\" is not a Vault role name",
        ),
        (
            &[("role", "r"), ("auth-method", "ldap")],
            "vault-kubernetes.io/auth-method: \"ldap\" is neither kubernetes nor jwt",
        ),
        (
            &[("role", "r"), ("auth-mount", "../sys")],
            "vault-kubernetes.io/auth-mount: \"../sys\" is not a Vault auth mount path",
        ),
        (
            &[("role", "r"), ("token-renew", "yes")],
            "vault-kubernetes.io/token-renew: \"yes\" is neither true nor false",
        ),
        (
            &[("role", "r"), ("token-dir", "relative")],
            "vault-kubernetes.io/token-dir: \"relative\" is not an absolute directory",
        ),
        (
            &[("role", "r"), ("secrets", "secret/../x")],
            "vault-kubernetes.io/secrets: \"secret/../x\" not an entry",
        ),
        (
            &[
                ("role", "r"),
                ("secrets", "secret/x"),
                ("secrets-interval", "10"),
            ],
            "vault-kubernetes.io/secrets-interval: \"10\" is not a duration",
        ),
        (
            &[
                ("role", "r"),
                ("secrets", "secret/x"),
                ("secrets-interval", "1m"),
                ("token-renew", "false"),
            ],
            "vault-kubernetes.io/secrets-interval needs the token kept alive",
        ),
        (
            &[("role", "r"), ("containers", "app,sidecar")],
            "vault-kubernetes.io/containers: no container named \"sidecar\"",
        ),
    ];
    for (pairs, message) in cases {
        let r = cluster().try_kube(
            Method::Post,
            &pods_path(&pod.namespace),
            Some(pod_object(
                "bad",
                annotations(pairs),
                pod_spec(vec![app("true")]),
            )),
        );
        let err = r.expect_err(&format!("{pairs:?} admitted")).to_string();
        assert!(
            err.contains("ValidatingAdmissionPolicy 'vault-kubernetes-injector'")
                && err.contains(message),
            "{pairs:?}: {err}"
        );
    }
}

/// In a namespace that enforces `restricted` (no host network there), the
/// API server's PodSecurity admission, which runs after the injection,
/// admits a pod with every injected container; the same pod with an app
/// that is not restricted is refused, so the check is live.
#[test]
fn every_injected_container_passes_pod_security_restricted() {
    let _config = injector();
    let s = cluster();
    let ns = unique("restricted");
    s.kube(
        Method::Post,
        "/api/v1/namespaces",
        Some(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
        ),
    );
    s.kube(
        Method::Post,
        &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}})),
    );
    let ann = annotations(&[
        ("role", "r"),
        ("auth-method", "jwt"),
        ("secrets", "secret/a,secret/b:bee,secret/folder/"),
        ("secrets-interval", "1m"),
    ]);
    let mut spec = pod_spec(vec![app("true")]);
    spec.as_object_mut().unwrap().remove("hostNetwork");
    let path = format!("{}?dryRun=All", pods_path(&ns));
    let p = s.kube(
        Method::Post,
        &path,
        Some(pod_object("all", ann.clone(), spec.clone())),
    );
    let init = p["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 4, "{p:#}");
    for c in init {
        assert_restricted(c);
        assert_eq!(c["securityContext"]["runAsUser"], 65534, "{c:#}");
    }
    // The JWT method: a projected token of audience vault.
    let jwt = p["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "vault-kubernetes-jwt")
        .unwrap();
    assert_eq!(
        jwt["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "vault"
    );
    spec["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let err = s
        .try_kube(Method::Post, &path, Some(pod_object("all", ann, spec)))
        .expect_err("an app that is not restricted is admitted: PodSecurity is not enforced");
    assert!(
        err.to_string()
            .contains("violates PodSecurity \"restricted:latest\"")
            && !err.to_string().contains("vault-kubernetes-"),
        "{err}"
    );
    s.kube(Method::Delete, &format!("/api/v1/namespaces/{ns}"), None);
}

/// The env wrapper (docs/env.md) asked by annotation: its installer runs
/// before the app, the containers' command is put behind it (or the
/// declared entrypoint, for a container without one), and a container with
/// nothing to wrap is refused, saying why. Admission only (dry run).
#[test]
fn env_wrap_wraps_commands_and_refuses_a_container_without_one() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let s = cluster();
    let path = format!("{}?dryRun=All", pods_path(&pod.namespace));
    let mut other = app("true");
    other["name"] = json!("other");
    other.as_object_mut().unwrap().remove("command");
    other["args"] = json!(["--flag"]);
    let spec = pod_spec(vec![app("env"), other]);
    let ann = |entrypoint: Option<&str>| {
        let mut pairs = vec![("role", pod.role.as_str()), ("env-wrap", "true")];
        pairs.extend(entrypoint.map(|e| ("entrypoint", e)));
        annotations(&pairs)
    };
    let p = s.kube(
        Method::Post,
        &path,
        Some(pod_object(
            "wrapped",
            ann(Some("/bin/server  serve")),
            spec.clone(),
        )),
    );
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        [
            "vault-kubernetes-authenticator",
            "vault-kubernetes-env-install",
            "vault-kubernetes-token-renewer"
        ]
    );
    let install = &p["spec"]["initContainers"][1];
    assert_eq!(install["args"], json!(["--install", "/vault-env"]));
    assert_restricted(install);
    let containers = &p["spec"]["containers"];
    assert_eq!(
        containers[0]["command"],
        json!([
            "/vault-env/vault-kubernetes-env",
            "--",
            "/bin/sh",
            "-c",
            "env"
        ])
    );
    assert_eq!(
        containers[1]["command"],
        json!([
            "/vault-env/vault-kubernetes-env",
            "--",
            "/bin/server",
            "serve"
        ])
    );
    assert_eq!(containers[1]["args"], json!(["--flag"]));
    for c in containers.as_array().unwrap() {
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/vault-env" && m["readOnly"] == true),
            "{c:#}"
        );
    }
    let err = s
        .try_kube(
            Method::Post,
            &path,
            Some(pod_object("wrapped", ann(None), spec)),
        )
        .expect_err("a wrapped container without command admitted")
        .to_string();
    assert!(
        err.contains("vault-kubernetes.io/env-wrap: container \"other\" has no command to wrap"),
        "{err}"
    );
}

/// Vault's JWT auth method: the pod logs in with a projected token of
/// audience `vault` (the ConfigMap's jwtAudience), at the mount `jwt`;
/// Vault checks the signature, no TokenReview.
#[test]
fn jwt_auth_method_through_annotations() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let s = cluster();
    jwt_role(&pod);
    let ann = annotations(&[
        ("role", &pod.role),
        ("auth-method", "jwt"),
        ("token-renew", "false"),
    ]);
    let mut spec = pod_spec(vec![app(
        "test -s \"$VAULT_TOKEN_PATH\" && echo token present",
    )]);
    // No API server token at all: the projected token of audience vault only.
    spec["automountServiceAccountToken"] = json!(false);
    let ns = &pod.namespace;
    cluster().kube(
        Method::Post,
        &pods_path(ns),
        Some(pod_object("jwt", ann, spec)),
    );
    let (_, log) = succeeded(ns, "jwt", 120);
    assert!(log.contains("app: token present"), "{log}");
    let logins = std::fs::read_to_string(s.get("VK_VAULT_AUDIT_LOG"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "auth/jwt/login"
                && e["auth"]["metadata"]["role"] == pod.role.as_str()
        })
        .count();
    assert_eq!(logins, 1, "{log}");
}

/// The env wrapper in a real pod, asked by annotation: the injected
/// installer puts vault-kubernetes-env in the memory volume, the app's
/// command runs behind it with the injected token (no login of its own),
/// and the app sees the secret's value while the pod's spec holds only the
/// reference.
#[test]
fn env_wrap_puts_a_secret_into_the_apps_environment() {
    let _config = injector();
    let pod = Pod::new(RoleOptions::default());
    let ns = &pod.namespace;
    let s = cluster();
    let path = format!("k8s/{ns}/db");
    s.kv_put(
        "secret",
        &path,
        json!({"password": "env-value-from-openbao"}),
    );
    let mut app = app(
        "test \"$DB_PASSWORD\" = env-value-from-openbao && echo value matches; \
         test -z \"$VAULT_TOKEN\" && echo no token in the environment",
    );
    app["env"] =
        json!([{"name": "DB_PASSWORD", "value": format!("vault:secret/data/{path}#password")}]);
    let ann = annotations(&[
        ("role", &pod.role),
        ("env-wrap", "true"),
        ("token-renew", "false"),
    ]);
    s.kube(
        Method::Post,
        &pods_path(ns),
        Some(pod_object("wrapped", ann, pod_spec(vec![app]))),
    );
    let (p, log) = succeeded(ns, "wrapped", 120);
    assert!(log.contains("app: value matches"), "{log}");
    assert!(log.contains("app: no token in the environment"), "{log}");
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        [
            "vault-kubernetes-authenticator",
            "vault-kubernetes-env-install"
        ]
    );
    let app = &p["spec"]["containers"][0];
    assert_eq!(app["command"][0], "/vault-env/vault-kubernetes-env");
    assert_eq!(
        app["env"][0]["value"],
        format!("vault:secret/data/{path}#password"),
        "the spec keeps the reference"
    );
    // The wrapper used the authenticator's token: one login in the pod.
    assert_eq!(audited(&pod, "auth/kubernetes/login"), 1, "{log}");
}

/// Events by annotation (docs/events.md): the injected renewer gets the
/// downward API's POD_NAME, POD_NAMESPACE and POD_UID, and records
/// Reauthenticated on its own pod when its token is revoked behind its back.
#[test]
fn events_annotation_lets_the_renewer_report_on_its_pod() {
    let _config = injector();
    let pod = Pod::new(RoleOptions {
        ttl: "6s",
        max_ttl: "1h",
        ..Default::default()
    });
    let ns = &pod.namespace;
    let s = cluster();
    let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}");
    s.kube(Method::Post, &format!("{rbac}/roles"), Some(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "events"},
        "rules": [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]})));
    s.kube(Method::Post, &format!("{rbac}/rolebindings"), Some(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "events"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "events"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]})));
    let ann = annotations(&[("role", &pod.role), ("events", "true")]);
    let created = s.kube(
        Method::Post,
        &pods_path(ns),
        Some(pod_object(
            "events",
            ann,
            pod_spec(vec![app("exec sleep 3600")]),
        )),
    );
    let renewer = &created["spec"]["initContainers"][1];
    assert_eq!(renewer["name"], "vault-kubernetes-token-renewer");
    assert!(
        renewer["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "POD_UID"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"),
        "{renewer:#}"
    );
    wait_for(ns, &format!("{}/events", pods_path(ns)), 120, |p| {
        phase(p) == "Running"
    });
    wait_audited(&pod, "auth/token/renew-self", 1, 40);
    let live = accessors(&pod);
    assert_eq!(live.len(), 1, "{live:?}");
    s.vault(
        Method::Post,
        "auth/token/revoke-accessor",
        Some(json!({ "accessor": live[0] })),
    );
    let events = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
    let list = wait_for(ns, &events, 60, |l| {
        l["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["reason"] == "Reauthenticated"
                    && e["reportingController"] == "vault-kubernetes-token-renewer"
                    && e["regarding"]["name"] == "events"
            })
        })
    });
    assert!(!list["items"].as_array().unwrap().is_empty());
    s.kube(Method::Delete, &format!("{}/events", pods_path(ns)), None);
}

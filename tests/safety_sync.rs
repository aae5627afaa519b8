//! The synchronizer never deletes or overwrites what is not its own
//! (issue 20, items 1-4), against the real stack: a mistyped Vault
//! namespace and every other answer that is not Vault's own "no keys",
//! two synchronizers in one namespace, a Secret detached or taken over
//! while a run is under way, and memory with many large secrets.
//!
//! Synchronizers here get their identity the default way: from the pod
//! they run in (`POD_NAME` names a Pod object owned by a ReplicaSet owned
//! by a Deployment, as in a cluster; the host stack has no kubelet, so the
//! pods stay Pending). Faults a real server cannot produce on demand (a
//! gateway's page, a 200 without keys) come from a proxy in front of the
//! real OpenBao; the race between list and delete from a proxy in front of
//! the real API server.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use support::*;
use vault_kubernetes::http::Method;

/// A namespace with a token for a policy on `secret/<base>/` (v2) and
/// `kv1/<base>/` (v1), and RBAC to read its pods and replicasets (what
/// the synchronizer's default identity needs).
struct Fixture {
    pod: Pod,
    base: String,
}

impl Fixture {
    fn new() -> Fixture {
        let base = unique("kvs");
        let s = stack();
        let policy = format!("p-{base}");
        s.policy(
            &policy,
            &format!(
                "path \"secret/data/{base}/*\" {{ capabilities = [\"read\"] }}\n\
                 path \"secret/metadata/{base}/*\" {{ capabilities = [\"list\"] }}\n\
                 path \"kv1/{base}/*\" {{ capabilities = [\"read\", \"list\"] }}\n"
            ),
        );
        let policies = [policy.as_str(), "vk-demo"];
        let pod = Pod::new(RoleOptions {
            policies: &policies,
            ..Default::default()
        });
        assert_ok(&run(AUTHENTICATOR, pod.env()));
        let ns = &pod.namespace;
        s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"), Some(json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"identity"},
            "rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},
                     {"apiGroups":["apps"],"resources":["replicasets"],"verbs":["get"]}]})));
        s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"), Some(json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"identity"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"identity"},
            "subjects":[{"kind":"ServiceAccount","name":pod.service_account,"namespace":ns}]})));
        Fixture { pod, base }
    }

    fn put(&self, path: &str, data: Value) {
        stack().kv_put("secret", &format!("{}/{path}", self.base), data);
    }

    fn put1(&self, path: &str, data: Value) {
        stack().kv1_put("kv1", &format!("{}/{path}", self.base), data);
    }

    /// A Deployment `name` with a ReplicaSet and a Pod, as the controllers
    /// would leave them; returns the Pod's name (the synchronizer's `POD_NAME`).
    fn deployment(&self, name: &str) -> String {
        let s = stack();
        let ns = &self.pod.namespace;
        let labels = json!({"app": name});
        let template = json!({"metadata":{"labels":labels},
            "spec":{"serviceAccountName":"app","containers":[{"name":"c","image":"example.invalid/none"}]}});
        let d = s.kube(
            Method::Post,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            Some(
                json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":name},
                "spec":{"replicas":1,"selector":{"matchLabels":labels},"template":template}}),
            ),
        );
        let rs_name = format!("{name}-5d9c7b8f4");
        let rs = s.kube(
            Method::Post,
            &format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
            Some(
                json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":rs_name,
                "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":name,
                    "uid":d["metadata"]["uid"],"controller":true,"blockOwnerDeletion":true}]},
                "spec":{"replicas":1,"selector":{"matchLabels":labels},"template":template}}),
            ),
        );
        let pod_name = format!("{rs_name}-x2v7q");
        let mut pod = template.clone();
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        pod["metadata"]["name"] = json!(pod_name);
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion":"apps/v1","kind":"ReplicaSet",
            "name":rs_name,"uid":rs["metadata"]["uid"],"controller":true,"blockOwnerDeletion":true}]);
        s.kube(
            Method::Post,
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(pod),
        );
        pod_name
    }

    fn sync(&self, pod_name: &str, secrets: &str, extra: &[(&str, &str)]) -> Output {
        let secrets = secrets.replace("$B", &self.base);
        // The default identity: no SYNCHRONIZER_ID, the pod's controller.
        let mut changes = vec![
            ("VAULT_SECRETS", secrets.as_str()),
            ("POD_NAME", pod_name),
            ("SYNCHRONIZER_ID", ""),
        ];
        changes.extend_from_slice(extra);
        run(SYNCHRONIZER, with(&self.pod.env(), &changes))
    }

    /// Name and resourceVersion of every Secret in the namespace.
    fn snapshot(&self) -> Vec<(String, String)> {
        let list = stack().kube(
            Method::Get,
            &format!("/api/v1/namespaces/{}/secrets", self.pod.namespace),
            None,
        );
        let mut out: Vec<(String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                    i["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn value(&self, name: &str, key: &str) -> String {
        let s = self
            .pod
            .secret(name)
            .unwrap_or_else(|| panic!("secret {name} missing"));
        let b64 = s["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no {key}: {s}"));
        String::from_utf8(vault_kubernetes::base64::decode(b64).unwrap()).unwrap()
    }

    fn target(&self, name: &str) -> PathBuf {
        let dir = self.pod.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

fn ok(out: &Output) -> String {
    let log = stderr(out);
    assert!(out.status.success(), "{log}");
    log
}

fn failed(out: &Output) -> String {
    let log = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    log
}

/// The lines of a log that mention `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// Sorted directory names under a file target (the record file excluded).
fn dirs(target: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

// ---- 1. A mistyped VAULT_NAMESPACE -----------------------------------------

#[test]
fn a_mistyped_namespace_deletes_nothing_on_either_target() {
    let f = Fixture::new();
    let me = f.deployment("sync");
    f.put1("folder/one", json!({"v": "1"}));
    f.put1("folder/two", json!({"v": "2"}));
    // The issue's case word for word (the demo's folder, KV v2) and a KV v1 folder.
    let entries = "secret/k8s/folder/, kv1/$B/folder/";
    let log = ok(&f.sync(&me, entries, &[]));
    assert!(log.contains("created 5"), "{log}");
    let before = f.snapshot();
    assert_eq!(before.len(), 5, "{before:?}");

    let out = f.sync(&me, entries, &[("VAULT_NAMESPACE", "bogus")]);
    let log = failed(&out);
    assert_eq!(f.snapshot(), before, "nothing written or deleted");
    assert!(!log.contains("delete secret"), "{log}");
    assert!(!log.contains("successfully synchronized"), "{log}");
    // One line says what Vault answered.
    assert_eq!(lines_with(&log, "namespace not found").len(), 1, "{log}");

    // Prune is live in this set-up: an entry removed is pruned.
    let log = ok(&f.sync(&me, "secret/k8s/folder/", &[]));
    assert!(log.contains("delete secret one"), "{log}");

    // The file target, the same way.
    let target = f.target("files");
    let files = [("SYNCHRONIZER_TARGET_DIR", target.to_str().unwrap())];
    ok(&f.sync(&me, entries, &files));
    assert_eq!(dirs(&target), ["alpha", "beta", "gamma", "one", "two"]);
    let out = f.sync(&me, entries, &[files[0], ("VAULT_NAMESPACE", "bogus")]);
    let log = failed(&out);
    assert_eq!(dirs(&target), ["alpha", "beta", "gamma", "one", "two"]);
    assert!(!log.contains("delete directory"), "{log}");
    assert_eq!(lines_with(&log, "namespace not found").len(), 1, "{log}");
    assert_eq!(std::fs::read_to_string(target.join("one/v")).unwrap(), "1");
}

// ---- 1. Every other answer that is not Vault's own "no keys" ---------------

/// What the fault proxy answers instead of OpenBao: status, content type, body.
type Canned = (u16, &'static str, String);

/// A loopback HTTP proxy in front of the real OpenBao that answers the
/// requests `rule` picks with a canned answer and forwards the rest.
/// Returns its address and the paths it answered itself.
fn vault_fault_proxy(
    rule: impl Fn(&str, &str) -> Option<Canned> + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let upstream = stack()
        .get("VAULT_ADDR")
        .trim_start_matches("http://")
        .to_string();
    let faked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (rule, seen) = (Arc::new(rule), faked.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (rule, seen, upstream) = (rule.clone(), seen.clone(), upstream.clone());
            std::thread::spawn(move || serve_proxied(conn, &upstream, &*rule, &seen));
        }
    });
    (addr, faked)
}

fn serve_proxied(
    conn: TcpStream,
    upstream: &str,
    rule: &dyn Fn(&str, &str) -> Option<Canned>,
    seen: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut head = Vec::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            // Upstream closes after each answer, so the body ends at EOF.
            if !line.to_ascii_lowercase().starts_with("connection:") {
                head.push(line);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let first: Vec<&str> = head[0].split_whitespace().collect();
        let (method, path) = (first[0], first[1]);
        if let Some((status, kind, text)) = rule(method, path) {
            seen.lock().unwrap().push(path.to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            continue;
        }
        let Ok(mut up) = TcpStream::connect(upstream) else {
            return;
        };
        let mut request = head.concat().into_bytes();
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        request.extend_from_slice(&body);
        let mut answer = Vec::new();
        if up.write_all(&request).is_err() || up.read_to_end(&mut answer).is_err() {
            return;
        }
        // The answer says `Connection: close`: the client opens a new one.
        let _ = conn.write_all(&answer);
        return;
    }
}

const GATEWAY_PAGE: &str =
    "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1></center><hr><center>nginx</center></body></html>";
const VERSIONED_WARNING: &str = r#"{"request_id":"5f3e","lease_id":"","renewable":false,"lease_duration":0,"data":null,"wrap_info":null,"warnings":["Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the OpenBao CLI, use 'bao kv list' for this operation."],"auth":null}"#;

#[test]
fn answers_that_are_not_an_empty_folder_stop_the_run_on_both_kv_versions_and_targets() {
    let f = Fixture::new();
    let me = f.deployment("sync");
    f.put("folder/a", json!({"v": "a"}));
    f.put("folder/b", json!({"v": "b"}));
    f.put("single/s", json!({"v": "s"}));
    f.put1("folder/c", json!({"v": "c"}));
    f.put1("folder/d", json!({"v": "d"}));
    f.put1("single/t", json!({"v": "t"}));
    let entries = "secret/$B/folder/, secret/$B/single/s, kv1/$B/folder/, kv1/$B/single/t";
    let target = f.target("files");
    let files = (
        "SYNCHRONIZER_TARGET_DIR",
        target.to_str().unwrap().to_string(),
    );
    ok(&f.sync(&me, entries, &[]));
    ok(&f.sync(&me, entries, &[(files.0, &files.1)]));
    let before = f.snapshot();
    assert_eq!(before.len(), 6, "{before:?}");
    let base = f.base.clone();

    // (what Vault answered, which requests, the answer, what the log line names)
    type Rule = Box<dyn Fn(&str, &str) -> Option<Canned> + Send + Sync>;
    let list_of = move |mount: &'static str| {
        let b = base.clone();
        move |m: &str, p: &str| {
            (m == "LIST" || p.contains("list=true"))
                && p.starts_with(&format!("/v1/{mount}"))
                && p.contains(&b)
        }
    };
    let cases: Vec<(&str, Rule, &str)> = vec![
        (
            "hidden mount lookup (a gateway's 404 page)",
            Box::new(|_: &str, p: &str| {
                p.starts_with("/v1/sys/internal/ui/mounts/")
                    .then(|| (404, "text/html", GATEWAY_PAGE.to_string()))
            }),
            "404",
        ),
        (
            "hidden mount lookup (404 without errors)",
            Box::new(|_: &str, p: &str| {
                p.starts_with("/v1/sys/internal/ui/mounts/")
                    .then(|| (404, "application/json", r#"{"errors":[]}"#.to_string()))
            }),
            "mount",
        ),
        (
            "KV v2 folder: a gateway's page",
            Box::new({
                let l = list_of("secret/");
                move |m: &str, p: &str| {
                    l(m, p).then(|| (404, "text/html", GATEWAY_PAGE.to_string()))
                }
            }),
            "nginx",
        ),
        (
            "KV v1 folder: a gateway's page",
            Box::new({
                let l = list_of("kv1/");
                move |m: &str, p: &str| {
                    l(m, p).then(|| (404, "text/html", GATEWAY_PAGE.to_string()))
                }
            }),
            "nginx",
        ),
        (
            "KV v2 folder: the versioned-path warning",
            Box::new({
                let l = list_of("secret/");
                move |m: &str, p: &str| {
                    l(m, p).then(|| (404, "application/json", VERSIONED_WARNING.to_string()))
                }
            }),
            "Invalid path for a versioned K/V secrets engine",
        ),
        (
            "KV v1 folder: the versioned-path warning",
            Box::new({
                let l = list_of("kv1/");
                move |m: &str, p: &str| {
                    l(m, p).then(|| (404, "application/json", VERSIONED_WARNING.to_string()))
                }
            }),
            "Invalid path for a versioned K/V secrets engine",
        ),
        (
            "KV v2 folder: a 200 without keys",
            Box::new({
                let l = list_of("secret/");
                move |m: &str, p: &str| {
                    l(m, p).then(|| (200, "application/json", r#"{"data":{}}"#.to_string()))
                }
            }),
            "data.keys",
        ),
        (
            "KV v1 folder: a 200 without keys",
            Box::new({
                let l = list_of("kv1/");
                move |m: &str, p: &str| {
                    l(m, p).then(|| (200, "application/json", r#"{"data":{}}"#.to_string()))
                }
            }),
            "data.keys",
        ),
        (
            "KV v2 read: a gateway's page",
            Box::new(|m: &str, p: &str| {
                (m == "GET" && p.starts_with("/v1/secret/data/") && p.ends_with("/single/s"))
                    .then(|| (404, "text/html", GATEWAY_PAGE.to_string()))
            }),
            "nginx",
        ),
        (
            "KV v1 read: a gateway's page",
            Box::new(|m: &str, p: &str| {
                (m == "GET" && p.starts_with("/v1/kv1/") && p.ends_with("/single/t"))
                    .then(|| (404, "text/html", GATEWAY_PAGE.to_string()))
            }),
            "nginx",
        ),
    ];
    for (what, rule, named) in cases {
        let (addr, faked) = vault_fault_proxy(rule);
        for target in [None, Some(&files)] {
            let mut extra = vec![("VAULT_ADDR", addr.as_str())];
            if let Some((k, v)) = target {
                extra.push((k, v.as_str()));
            }
            let out = f.sync(&me, entries, &extra);
            let log = stderr(&out);
            let on = if target.is_some() { "files" } else { "secrets" };
            assert!(
                !faked.lock().unwrap().is_empty(),
                "{what}: the fault was served"
            );
            assert_eq!(out.status.code(), Some(1), "{what} ({on}): {log}");
            assert!(!log.contains("delete "), "{what} ({on}): {log}");
            assert!(
                !log.contains("not found (or its latest"),
                "{what} ({on}): {log}"
            );
            assert!(
                log.contains(named),
                "{what} ({on}): the line names the answer: {log}"
            );
            assert_eq!(f.snapshot(), before, "{what}: nothing written or deleted");
            assert_eq!(
                dirs(&target_dir(&files)),
                ["a", "b", "c", "d", "s", "t"],
                "{what}"
            );
        }
    }

    // Vault's own answers for an empty or missing folder stay "no keys":
    // on a positively identified mount, the folder's Secrets are pruned.
    let log = ok(&f.sync(&me, "secret/$B/nothing/, kv1/$B/nothing/", &[]));
    assert!(log.contains("deleted 6"), "{log}");
}

fn target_dir(files: &(&str, String)) -> PathBuf {
    PathBuf::from(&files.1)
}

// ---- 2. Two synchronizers in one namespace ---------------------------------

#[test]
fn two_default_synchronizers_run_alternately_keep_both_sets() {
    let f = Fixture::new();
    let a = f.deployment("sync-a");
    let b = f.deployment("sync-b");
    for i in 0..3 {
        f.put(&format!("a/a{i}"), json!({"v": format!("a{i}")}));
        f.put(&format!("b/b{i}"), json!({"v": format!("b{i}")}));
    }
    let mut logs = String::new();
    let mut first: Option<Vec<(String, String)>> = None;
    for round in 0..2 {
        logs += &ok(&f.sync(&a, "secret/$B/a/", &[]));
        logs += &ok(&f.sync(&b, "secret/$B/b/", &[]));
        let now = f.snapshot();
        let names: Vec<&str> = now.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["a0", "a1", "a2", "b0", "b1", "b2"],
            "round {round}: {logs}"
        );
        match &first {
            None => first = Some(now),
            Some(then) => assert_eq!(&now, then, "no write after the first round: {logs}"),
        }
    }
    assert!(!logs.contains("delete secret"), "{logs}");
    assert_eq!(f.value("a1", "v"), "a1");
    assert_eq!(f.value("b2", "v"), "b2");
}

#[test]
fn one_secret_name_mapped_by_two_stays_with_its_first_owner() {
    let f = Fixture::new();
    let a = f.deployment("sync-a");
    let b = f.deployment("sync-b");
    f.put("a/creds", json!({"user": "from-a"}));
    f.put("b/creds", json!({"user": "from-b"}));
    f.put("b/other", json!({"v": "b"}));
    ok(&f.sync(
        &a,
        "secret/$B/a/creds:shared",
        &[("SYNCHRONIZER_LABELS", "team=a")],
    ));
    let rv = f.snapshot();
    let mut b_logs = String::new();
    for _ in 0..2 {
        let out = f.sync(
            &b,
            "secret/$B/b/creds:shared, secret/$B/b/other",
            &[("SYNCHRONIZER_LABELS", "team=b")],
        );
        // A skipped Secret is a failed run: an init container must not let
        // its app start on another synchronizer's credentials.
        b_logs += &failed(&out);
        ok(&f.sync(
            &a,
            "secret/$B/a/creds:shared",
            &[("SYNCHRONIZER_LABELS", "team=a")],
        ));
    }
    assert_eq!(f.value("shared", "user"), "from-a");
    let shared_rv =
        |snap: &[(String, String)]| snap.iter().find(|(n, _)| n == "shared").unwrap().1.clone();
    assert_eq!(
        shared_rv(&f.snapshot()),
        shared_rv(&rv),
        "no flap: {b_logs}"
    );
    let s = f.pod.secret("shared").unwrap();
    assert_eq!(s["metadata"]["labels"]["team"], "a", "{s}");
    // B still writes what is its own.
    assert_eq!(f.value("other", "v"), "b");
    let warnings = lines_with(&b_logs, "WARNING:");
    assert!(
        warnings.iter().any(|l| l.contains("shared")
            && l.contains("Deployment/sync-a")
            && l.contains("Deployment/sync-b")),
        "{b_logs}"
    );
}

// ---- 3. Prune's preconditions ------------------------------------------------

/// A TCP forwarder to the API server (TLS passes through: its certificate
/// is for 127.0.0.1, whatever the port) that runs `hook` when the client
/// opens its second connection, before forwarding it. The synchronizer
/// lists on one connection and opens more for its parallel writes, so the
/// hook runs after the lists and before any write or delete.
fn kube_hook_proxy(hook: impl FnOnce() + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = stack()
        .get("VK_KUBE_ADDR")
        .trim_start_matches("https://")
        .to_string();
    let hook = Mutex::new(Some(hook));
    let n = AtomicUsize::new(0);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if n.fetch_add(1, Ordering::SeqCst) == 1 {
                if let Some(h) = hook.lock().unwrap().take() {
                    h();
                }
            }
            let Ok(up) = TcpStream::connect(&upstream) else {
                continue;
            };
            splice(conn, up);
        }
    });
    port
}

#[test]
fn a_secret_detached_or_taken_over_during_a_run_is_not_deleted() {
    let f = Fixture::new();
    let me = f.deployment("sync");
    let updated: Vec<String> = (0..12).map(|i| format!("secret/$B/app/u{i}")).collect();
    for i in 0..12 {
        f.put(&format!("app/u{i}"), json!({"v": "1"}));
    }
    f.put("app/detached", json!({"v": "1"}));
    f.put("app/taken", json!({"v": "1"}));
    let all = format!(
        "{}, secret/$B/app/detached, secret/$B/app/taken",
        updated.join(", ")
    );
    ok(&f.sync(&me, &all, &[]));
    for i in 0..12 {
        f.put(&format!("app/u{i}"), json!({"v": "2"}));
    }

    let ns = f.pod.namespace.clone();
    let port = kube_hook_proxy(move || {
        let s = stack();
        let path = |n: &str| format!("/api/v1/namespaces/{ns}/secrets/{n}");
        // Someone takes "detached" out of the synchronizer's hands...
        let mut d = s.kube(Method::Get, &path("detached"), None);
        d["metadata"]["annotations"] = json!({"note": "kept by hand"});
        d["metadata"]["labels"] = json!({});
        s.kube(Method::Put, &path("detached"), Some(d));
        // ...and another synchronizer takes "taken" over.
        let mut t = s.kube(Method::Get, &path("taken"), None);
        t["metadata"]["annotations"]["vault-secret"] = json!("secret/elsewhere/taken");
        t["metadata"]["annotations"]["vault-kubernetes/owner"] = json!("Deployment/other");
        s.kube(Method::Put, &path("taken"), Some(t));
    });
    let out = f.sync(
        &me,
        &updated.join(", "),
        &[("KUBERNETES_SERVICE_PORT", &port.to_string())],
    );
    let log = ok(&out);
    assert!(
        log.contains("updated 12"),
        "the hook ran before the writes: {log}"
    );
    assert!(!log.contains("delete secret"), "{log}");
    assert!(f.pod.secret("detached").is_some(), "{log}");
    assert!(f.pod.secret("taken").is_some(), "{log}");
    assert_eq!(f.value("taken", "v"), "1");
}

// ---- 4. Memory bounded by design --------------------------------------------

/// The synchronizer as shipped in the image: release profile, musl.
/// Memory is measured on it: the debug build allocates through glibc,
/// whose per-thread arenas keep what musl gives back.
fn shipped_synchronizer() -> PathBuf {
    release_binary("x86_64-unknown-linux-musl", "synchronizer")
}

/// Peak RSS in KiB of a synchronizer run (GNU time's maximum resident set).
fn peak_rss(env: Vec<(String, String)>) -> (u64, Output) {
    let out_file = std::env::temp_dir().join(unique("vk-rss"));
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.env_clear()
        .stdin(std::process::Stdio::null())
        .args(["-f", "%M", "-o"])
        .arg(&out_file)
        .arg(shipped_synchronizer());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    record_log(&out);
    let text = std::fs::read_to_string(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    (text.trim().lines().last().unwrap().parse().unwrap(), out)
}

/// The memory limit of the demo's synchronizer containers.
const DEMO_LIMIT_KIB: u64 = 64 * 1024;

#[test]
fn sixty_secrets_of_900_kib_stay_under_the_demo_memory_limit() {
    let f = Fixture::new();
    let me = f.deployment("sync");
    let s = stack();
    // Large, and not secret: written without recording them for the log scan.
    let value = "v".repeat(900 * 1024);
    for i in 0..60 {
        s.vault(
            Method::Post,
            &format!("secret/data/{}/big/s{i:02}", f.base),
            Some(json!({"data": {"blob": value}})),
        );
    }
    // Other synchronizers' large Secrets in the namespace.
    for i in 0..10 {
        f.pod.put_secret(
            json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":format!("theirs-{i}"),
            "labels":{"vault-kubernetes/managed":"true"},
            "annotations":{"other-sync":"secret/x","vault-kubernetes/owner":"Deployment/other"}},
            "stringData":{"blob": value}}),
        );
    }
    let env = with(
        &f.pod.env(),
        &[
            ("VAULT_SECRETS", &format!("secret/{}/big/", f.base)),
            ("POD_NAME", &me),
            ("SYNCHRONIZER_ID", ""),
        ],
    );
    let mut report = Vec::new();
    for run in ["first sync", "no-op"] {
        let (kib, out) = peak_rss(env.clone());
        let log = ok(&out);
        assert!(
            log.contains(if run == "no-op" {
                "unchanged 60"
            } else {
                "created 60"
            }),
            "{log}"
        );
        report.push(format!("secrets, {run}: {kib} KiB"));
    }
    let target = f.target("files");
    let files = with(
        &env,
        &[("SYNCHRONIZER_TARGET_DIR", target.to_str().unwrap())],
    );
    for run in ["first sync", "no-op"] {
        let (kib, out) = peak_rss(files.clone());
        ok(&out);
        report.push(format!("files, {run}: {kib} KiB"));
    }
    println!("peak RSS: {report:?}");
    for line in &report {
        let kib: u64 = line
            .rsplit(": ")
            .next()
            .unwrap()
            .trim_end_matches(" KiB")
            .parse()
            .unwrap();
        assert!(
            kib < DEMO_LIMIT_KIB,
            "over the demo manifests' 64 MiB limit: {report:?}"
        );
    }
    for i in 0..10 {
        assert!(f.pod.secret(&format!("theirs-{i}")).is_some(), "theirs-{i}");
    }
}

#[test]
fn a_target_directory_is_left_alone_by_a_synchronizer_that_does_not_own_it() {
    let f = Fixture::new();
    let me = f.deployment("sync");
    f.put("a/x", json!({"v": "a"}));
    f.put("b/y", json!({"v": "b"}));
    let target = f.target("files");
    let dir = ("SYNCHRONIZER_TARGET_DIR", target.to_str().unwrap());
    // Written by an earlier version: a record without owner, adopted once.
    ok(&f.sync(&me, "secret/$B/a/", &[dir]));
    let record = target.join(".vault-kubernetes.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(body["owner"], Value::Null, "no identity, no owner: {body}");
    let log = ok(&f.sync(&me, "secret/$B/a/", &[dir, ("SYNCHRONIZER_ID", "team-a")]));
    assert!(log.contains("adopt target directory"), "{log}");
    body = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(body["owner"], "team-a");

    // Another synchronizer on the same volume, another mapping: nothing
    // written, nothing pruned, a warning naming both, exit 1.
    for other in [Some("team-b"), None] {
        let mut extra = vec![dir];
        if let Some(id) = other {
            extra.push(("SYNCHRONIZER_ID", id));
        }
        let log = failed(&f.sync(&me, "secret/$B/b/", &extra));
        assert_eq!(dirs(&target), ["x"], "{log}");
        let warning = lines_with(&log, "WARNING:").join("\n");
        assert!(
            warning.contains("team-a") && warning.contains(other.unwrap_or("no SYNCHRONIZER_ID")),
            "{log}"
        );
    }
    assert_eq!(std::fs::read_to_string(target.join("x/v")).unwrap(), "a");
    // Its owner still prunes what it no longer maps.
    let log = ok(&f.sync(&me, "secret/$B/b/", &[dir, ("SYNCHRONIZER_ID", "team-a")]));
    assert!(log.contains("delete directory"), "{log}");
    assert_eq!(dirs(&target), ["y"]);
}

#[test]
fn without_an_identity_nothing_is_pruned_and_owned_secrets_are_left_alone() {
    let f = Fixture::new();
    let other = f.deployment("other");
    f.put("app/a", json!({"v": "1"}));
    f.put("app/b", json!({"v": "1"}));
    f.put("app/owned", json!({"v": "mine"}));
    ok(&f.sync(&other, "secret/$B/app/owned", &[]));
    // No pod of that name: the identity cannot be read.
    let log = ok(&f.sync("not-a-pod", "secret/$B/app/a, secret/$B/app/b", &[]));
    assert!(
        log.contains("WARNING: no synchronizer identity (pod not-a-pod not found"),
        "{log}"
    );
    assert!(log.contains("created 2"), "{log}");
    let before = f.snapshot();
    f.put("app/owned", json!({"v": "not-written-8d1f"}));
    let out = f.sync("not-a-pod", "secret/$B/app/a, secret/$B/app/owned", &[]);
    let log = failed(&out);
    assert!(!log.contains("delete secret"), "{log}");
    assert!(
        log.contains("secret owned belongs to Deployment/other; this synchronizer (no identity)"),
        "{log}"
    );
    assert_eq!(f.snapshot(), before, "b kept, owned untouched");
    assert_eq!(f.value("owned", "v"), "mine");
}

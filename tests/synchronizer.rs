//! vault-kubernetes-synchronizer against the real stack: each test has its
//! own namespace, KV paths and policy.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use vault_kubernetes::http::Method;

/// A pod with a token from the authenticator and a KV area of its own:
/// `secret/<base>/...` (v2) and `kv1/<base>/...` (v1).
struct Fixture {
    pod: Pod,
    base: String,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with_policy(None)
    }

    fn with_policy(policy: Option<&str>) -> Fixture {
        let (pod, base) = pod_with_policy(
            "kv",
            |base| policy.map_or_else(|| kv_rules(base), str::to_string),
            &[],
        );
        pod.login();
        Fixture { pod, base }
    }

    fn put(&self, path: &str, data: Value) {
        stack().kv_put("secret", &format!("{}/{path}", self.base), data);
    }

    fn sync(&self, secrets: &str, extra: &[(&str, &str)]) -> Output {
        let secrets = secrets.replace("$B", &self.base);
        let mut changes = vec![("VAULT_SECRETS", secrets.as_str())];
        changes.extend_from_slice(extra);
        self.pod.run(SYNCHRONIZER, &changes)
    }

    fn data(&self, name: &str) -> Vec<(String, String)> {
        let s = self
            .pod
            .secret(name)
            .unwrap_or_else(|| panic!("secret {name} missing"));
        let mut out: Vec<(String, String)> = s["data"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let bytes = vault_kubernetes::base64::decode(v.as_str().unwrap()).unwrap();
                        (k.clone(), String::from_utf8(bytes).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn rv(&self, name: &str) -> String {
        self.pod.secret(name).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.pod
            .secret_names()
            .into_iter()
            .map(|n| {
                let rv = self.rv(&n);
                (n, rv)
            })
            .collect()
    }
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn three_forms_on_kv2_in_every_spelling() {
    let f = Fixture::new();
    f.put("app/first", json!({"one": "1", "two": "2"}));
    f.put("app/second", json!({"green": "apple"}));
    f.put("dir/a", json!({"k": "a"}));
    f.put("dir/b", json!({"k": "b"}));
    f.put("dir/sub/c", json!({"k": "c"}));
    let log = assert_ok(&f.sync(
        "secret/$B/app/first, secret/data/$B/app/second:renamed, secret/$B/dir/",
        &[],
    ));
    assert_eq!(f.pod.secret_names(), ["a", "b", "first", "renamed"]);
    assert_eq!(f.data("first"), kv(&[("one", "1"), ("two", "2")]));
    assert_eq!(f.data("renamed"), kv(&[("green", "apple")]));
    assert!(
        log.contains(&format!("read secret/{}/app/first from vault", f.base)),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "create secret first from vault secret secret/{}/app/first",
            f.base
        )),
        "{log}"
    );
    assert!(log.contains("secrets successfully synchronized"), "{log}");
    assert!(log.contains("sub/"), "sub-folder skipped and logged: {log}");
    assert!(!log.contains("apple"), "values never logged");

    for folder in ["secret/data/$B/dir/", "secret/metadata/$B/dir/"] {
        let g = Fixture::new();
        g.put("dir/x", json!({"k": "x"}));
        assert_ok(&g.sync(folder, &[]));
        assert_eq!(g.pod.secret_names(), ["x"], "{folder}");
    }
}

#[test]
fn kv1_and_nested_mounts() {
    let f = Fixture::new();
    let s = stack();
    s.kv1_put("kv1", &format!("{}/one", f.base), json!({"v": "1"}));
    s.kv1_put("kv1", &format!("{}/dir/two", f.base), json!({"v": "2"}));
    assert_ok(&f.sync("kv1/$B/one, kv1/$B/dir/", &[]));
    assert_eq!(f.pod.secret_names(), ["one", "two"]);
    assert_eq!(f.data("two"), kv(&[("v", "2")]));

    // A multi-segment KV v2 mount beside a KV v1 mount whose name is a
    // string prefix of it (OpenBao refuses truly nested mounts): each path
    // resolves to its own mount, never to the first prefix that matches.
    let outer = unique("outer");
    s.vault(
        Method::Post,
        &format!("sys/mounts/{outer}"),
        Some(json!({"type":"kv","options":{"version":"1"}})),
    );
    s.vault(
        Method::Post,
        &format!("sys/mounts/{outer}-x/inner"),
        Some(json!({"type":"kv","options":{"version":"2"}})),
    );
    s.kv_put(
        &format!("{outer}-x/inner"),
        "app/deep",
        json!({"v": "nested"}),
    );
    s.kv1_put(&outer, "shallow", json!({"v": "outer"}));
    let g = Fixture::with_policy(Some(&format!(
        "path \"{outer}/*\" {{ capabilities = [\"read\", \"list\"] }}\npath \"{outer}-x/inner/*\" {{ capabilities = [\"read\", \"list\"] }}\n"
    )));
    assert_ok(&g.sync(&format!("{outer}-x/inner/app/deep, {outer}/shallow"), &[]));
    assert_eq!(g.data("deep"), kv(&[("v", "nested")]));
    assert_eq!(g.data("shallow"), kv(&[("v", "outer")]));
}

#[test]
fn prefix_labels_annotation_and_no_op_second_run() {
    let f = Fixture::new();
    f.put("app/db", json!({"user": "u"}));
    assert_ok(&f.sync(
        "secret/$B/app/db",
        &[
            ("SECRET_PREFIX", "pre-"),
            ("SYNCHRONIZER_LABELS", "team=a, app=b"),
        ],
    ));
    let s = f.pod.secret("pre-db").unwrap();
    assert_eq!(
        s["metadata"]["annotations"]["vault-secret"],
        format!("secret/{}/app/db", f.base)
    );
    let owner = s["metadata"]["labels"]["vault-kubernetes/owner"].clone();
    assert!(owner.as_str().is_some_and(|l| l.len() == 40), "{s}");
    assert_eq!(
        s["metadata"]["labels"],
        json!({"team": "a", "app": "b", "vault-kubernetes/managed": "true", "vault-kubernetes/owner": owner})
    );
    assert_eq!(
        s["metadata"]["annotations"]["vault-kubernetes/owner"],
        format!("test/{}", f.pod.namespace)
    );
    assert_eq!(s["type"], "Opaque");
    let before = f.snapshot();
    let log = assert_ok(&f.sync(
        "secret/$B/app/db",
        &[
            ("SECRET_PREFIX", "pre-"),
            ("SYNCHRONIZER_LABELS", "team=a,app=b"),
        ],
    ));
    assert_eq!(f.snapshot(), before, "second run writes nothing");
    assert!(log.contains("unchanged 1"), "{log}");
}

#[test]
fn changed_data_updates_only_that_secret_and_keeps_foreign_metadata() {
    let f = Fixture::new();
    f.put("app/a", json!({"v": "1"}));
    f.put("app/b", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/app/", &[]));
    // Someone else adds an annotation and a label to "a".
    let mut a = f.pod.secret("a").unwrap();
    a["metadata"]["annotations"]["owner"] = json!("team-x");
    a["metadata"]["labels"] = json!({"keep": "me"});
    stack().kube(
        Method::Put,
        &format!("/api/v1/namespaces/{}/secrets/a", f.pod.namespace),
        Some(a),
    );
    let rv_b = f.rv("b");
    f.put("app/a", json!({"v": "2", "new": "x"}));
    let log = assert_ok(&f.sync("secret/$B/app/", &[]));
    assert!(log.contains("update secret a from vault secret"), "{log}");
    assert_eq!(f.data("a"), kv(&[("new", "x"), ("v", "2")]));
    let a = f.pod.secret("a").unwrap();
    assert_eq!(a["metadata"]["annotations"]["owner"], "team-x");
    assert_eq!(a["metadata"]["labels"]["keep"], "me");
    assert_eq!(f.rv("b"), rv_b, "b untouched");
}

#[test]
fn prune_removes_only_our_delisted_secrets() {
    let f = Fixture::new();
    f.put("app/keep", json!({"v": "1"}));
    f.put("app/drop", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/app/keep, secret/$B/app/drop", &[]));
    f.pod.put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"unmanaged"},"stringData":{"x":"y"}}));
    f.pod.put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"theirs","annotations":{"other-sync":"secret/x"}}}));
    let log = assert_ok(&f.sync("secret/$B/app/keep", &[]));
    assert!(log.contains("delete secret drop"), "{log}");
    assert_eq!(f.pod.secret_names(), ["keep", "theirs", "unmanaged"]);
    // Turned off: nothing deleted.
    let log = assert_ok(&f.sync("secret/$B/app/drop", &[("SYNCHRONIZER_PRUNE", "false")]));
    assert!(!log.contains("delete secret"), "{log}");
    assert_eq!(
        f.pod.secret_names(),
        ["drop", "keep", "theirs", "unmanaged"]
    );
    // Scoped by owner: another synchronizer leaves ours alone.
    let log = assert_ok(&f.sync(
        "secret/$B/app/other",
        &[("SYNCHRONIZER_ID", "someone-else")],
    ));
    assert!(!log.contains("delete secret"), "{log}");
    assert!(f.pod.secret("keep").is_some());
}

#[test]
fn existing_secret_without_annotation_is_left_alone() {
    let f = Fixture::new();
    f.put("app/taken", json!({"v": "vault"}));
    f.pod.put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"taken"},"stringData":{"v":"mine"}}));
    let log = assert_ok(&f.sync("secret/$B/app/taken", &[]));
    assert!(
        log.contains("WARNING: ignoring secret taken - not managed by synchronizer"),
        "{log}"
    );
    assert_eq!(f.data("taken"), kv(&[("v", "mine")]));
}

#[test]
fn invalid_name_key_or_base64_changes_nothing() {
    let f = Fixture::new();
    f.put("app/good", json!({"v": "1"}));
    f.put("app/Bad_Name", json!({"v": "1"}));
    f.put("app2/badkey", json!({"a/b": "1"}));
    f.put("app3/b64", json!({"v": "base64:***"}));
    f.put("old/stale", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/old/stale", &[]));
    let before = f.snapshot();
    for (entries, needle) in [
        ("secret/$B/app/good, secret/$B/app/Bad_Name", "Bad_Name"),
        ("secret/$B/app/good, secret/$B/app2/badkey", "invalid key"),
        ("secret/$B/app/good, secret/$B/app3/b64", "base64"),
    ] {
        let out = f.sync(entries, &[]);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{entries}: {log}");
        assert!(log.contains(needle), "{entries}: {log}");
        assert_eq!(f.snapshot(), before, "{entries}: nothing written or pruned");
    }
}

#[test]
fn vault_403_on_one_path_writes_and_prunes_nothing() {
    let f = Fixture::new();
    f.put("app/ok", json!({"v": "1"}));
    f.put("old/stale", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/old/stale", &[]));
    let before = f.snapshot();
    let out = f.sync("secret/$B/app/ok, secret/forbidden/x", &[]);
    let log = assert_fails(&out);
    assert!(log.contains("403"), "{log}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn non_string_values_are_json_text_and_base64_is_decoded() {
    let f = Fixture::new();
    f.put("app/typed", json!({"n": 42, "t": true, "o": {"a": [1, "x"]}, "z": null, "b": "base64:aGVsbG8=", "s": "plain"}));
    assert_ok(&f.sync("secret/$B/app/typed", &[]));
    assert_eq!(
        f.data("typed"),
        kv(&[
            ("b", "hello"),
            ("n", "42"),
            ("o", r#"{"a":[1,"x"]}"#),
            ("s", "plain"),
            ("t", "true"),
            ("z", "null")
        ])
    );
}

#[test]
fn not_found_is_a_warning_and_keeps_the_secret() {
    let f = Fixture::new();
    f.put("app/gone", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/app/gone", &[]));
    stack().vault(
        Method::Delete,
        &format!("secret/data/{}/app/gone", f.base),
        None,
    );
    let log = assert_ok(&f.sync("secret/$B/app/gone", &[]));
    assert!(log.contains("not found"), "{log}");
    assert_eq!(f.data("gone"), kv(&[("v", "1")]));
}

#[test]
fn two_replicas_at_once_both_succeed() {
    let f = Fixture::new();
    for i in 0..20 {
        f.put(&format!("many/s{i}"), json!({"v": i.to_string()}));
    }
    let env = with(
        &f.pod.env(),
        &[("VAULT_SECRETS", &format!("secret/{}/many/", f.base))],
    );
    let a = spawn(SYNCHRONIZER, env.clone());
    let b = spawn(SYNCHRONIZER, env);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_ok(&a);
    assert_ok(&b);
    assert_eq!(f.pod.secret_names().len(), 20);
    assert_eq!(f.data("s7"), kv(&[("v", "7")]));
}

#[test]
fn missing_token_falls_back_to_existing_secrets() {
    let f = Fixture::new();
    f.put("app/x", json!({"v": "1"}));
    f.put("dir/y", json!({"v": "1"}));
    let entries = "secret/$B/app/x, secret/$B/dir/";
    assert_ok(&f.sync(entries, &[("SECRET_PREFIX", "p-")]));
    std::fs::remove_file(f.pod.token_path()).unwrap();
    let log = assert_ok(&f.sync(entries, &[("SECRET_PREFIX", "p-")]));
    assert!(
        log.contains(&format!(
            "check k8s secret p-x from vault secret secret/{}/app/x",
            f.base
        )),
        "{log}"
    );
    assert!(log.contains("cannot synchronize secrets - all secrets seems to be available therefore pod creation will continue"), "{log}");
    let out = f.sync(
        &format!("{entries}, secret/$B/app/missing"),
        &[("SECRET_PREFIX", "p-")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = f.sync(entries, &[("SECRET_PREFIX", "other-")]);
    assert_eq!(out.status.code(), Some(1), "prefix is applied in the check");
}

#[test]
fn go_created_secrets_are_adopted() {
    let f = Fixture::new();
    f.put("app/legacy", json!({"v": "new"}));
    let path = format!("secret/{}/app/legacy", f.base);
    f.pod.put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"legacy","annotations":{"vault-secret": path}},"stringData":{"v":"old"}}));
    let log = assert_ok(&f.sync("secret/$B/app/legacy", &[]));
    assert!(log.contains("update secret legacy"), "{log}");
    assert_eq!(f.data("legacy"), kv(&[("v", "new")]));
    let before = f.snapshot();
    assert_ok(&f.sync("secret/$B/app/legacy", &[]));
    assert_eq!(f.snapshot(), before);
}

#[test]
fn continuous_mode_follows_vault_and_stops_on_sigterm() {
    let f = Fixture::new();
    f.put("app/live", json!({"v": "1"}));
    let env = with(
        &f.pod.env(),
        &[
            ("VAULT_SECRETS", &format!("secret/{}/app/live", f.base)),
            ("SYNC_INTERVAL", "2s"),
        ],
    );
    let child = spawn(SYNCHRONIZER, env);
    wait_until(Duration::from_secs(10), || f.pod.secret("live").is_some());
    f.put("app/live", json!({"v": "2"}));
    wait_until(Duration::from_secs(5), || {
        f.data("live") == kv(&[("v", "2")])
    });
    assert_eq!(
        f.data("live"),
        kv(&[("v", "2")]),
        "picked up within one interval"
    );
    stop_with_sigterm(child);
}

#[test]
fn the_demo_policy_is_enough() {
    // vk-demo grants read/list on the demo paths and nothing on sys/mounts.
    let pod = Pod::new(RoleOptions::default());
    pod.login();
    assert_ok(&pod.run(
        SYNCHRONIZER,
        &[(
            "VAULT_SECRETS",
            "secret/k8s/first,secret/k8s/folder/,kv1/k8s/first:v1",
        )],
    ));
    assert_eq!(
        pod.secret_names(),
        ["alpha", "beta", "first", "gamma", "v1"]
    );
}

#[test]
fn kubernetes_401_rereads_the_service_account_token() {
    let f = Fixture::new();
    f.put("app/rot", json!({"v": "1"}));
    // The pod's API token is bound to a Secret, so deleting it revokes the token.
    let holder = f
        .pod
        .put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"holder"}}));
    let bound = mint_jwt(
        &f.pod.namespace,
        &f.pod.service_account,
        Some(
            json!({"kind":"Secret","apiVersion":"v1","name":"holder","uid":holder["metadata"]["uid"]}),
        ),
    );
    let token_file = f.pod.dir.join("sa/token");
    std::fs::write(&token_file, &bound).unwrap();
    let env = with(
        &f.pod.env(),
        &[
            ("VAULT_SECRETS", &format!("secret/{}/app/rot", f.base)),
            ("SYNC_INTERVAL", "1s"),
            ("SYNCHRONIZER_PRUNE", "false"),
        ],
    );
    let child = spawn(SYNCHRONIZER, env);
    assert!(wait_until(Duration::from_secs(10), || f
        .pod
        .secret("rot")
        .is_some()));

    // Rotate: a fresh token in the file, with the old mtime so only a 401
    // can make the client read it again; then revoke the old one.
    let mtime = std::fs::metadata(&token_file).unwrap().modified().unwrap();
    std::fs::write(
        &token_file,
        mint_jwt(&f.pod.namespace, &f.pod.service_account, None),
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&token_file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    stack().kube(
        Method::Delete,
        &format!("/api/v1/namespaces/{}/secrets/holder", f.pod.namespace),
        None,
    );
    // Wait until the API server refuses the old token, then change Vault.
    let refused = wait_until(Duration::from_secs(30), || {
        let status = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                stack().get("VK_CA_CERT"),
                "-H",
            ])
            .arg(format!("Authorization: Bearer {bound}"))
            .arg(format!(
                "{}/api/v1/namespaces/{}/secrets",
                stack().get("VK_KUBE_ADDR"),
                f.pod.namespace
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&status.stdout) == "401"
    });
    assert!(refused, "old token still accepted");
    f.put("app/rot", json!({"v": "2"}));
    let updated = wait_until(Duration::from_secs(10), || {
        f.data("rot") == kv(&[("v", "2")])
    });
    sigterm(&child);
    let log = stderr(&child.wait_with_output().unwrap());
    assert!(updated, "no sync after the token rotated: {log}");
}

#[test]
fn hand_edited_secret_is_restored_and_a_no_op_run_writes_nothing() {
    let f = Fixture::new();
    f.put("app/db", json!({"user": "u", "password": "p"}));
    f.put("app/other", json!({"v": "1"}));
    // A large unrelated Secret (a Helm release, say) in the same namespace.
    f.pod.put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"sh.helm.release.v1.big.v1","labels":{"owner":"helm"}},"stringData":{"release":"x".repeat(512 * 1024)}}));
    let entries = "secret/$B/app/db, secret/$B/app/other";
    assert_ok(&f.sync(entries, &[]));
    assert_eq!(
        f.pod.secret("db").unwrap()["metadata"]["labels"]["vault-kubernetes/managed"],
        "true"
    );

    // No-op: two list calls (metadata of all, data of ours only), no write.
    let (out, events) = kube_audit(&f.pod.namespace, || f.sync(entries, &[]));
    let log = assert_ok(&out);
    assert_eq!(verbs(&events), ["list", "list"], "{events:?}");
    let selected: Vec<&str> = events
        .iter()
        .filter_map(|e| e["requestURI"].as_str())
        .filter(|u| u.contains("labelSelector=vault-kubernetes%2Fowner%3D"))
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "data is listed by our owner label: {events:?}"
    );
    assert!(log.contains("unchanged 2"), "{log}");

    // Hand edits: a value changed and a key added, annotations left as they were.
    let mut db = f.pod.secret("db").unwrap();
    db["data"]["password"] = json!(vault_kubernetes::base64::encode(b"hacked"));
    db["data"]["extra"] = json!(vault_kubernetes::base64::encode(b"x"));
    stack().kube(
        Method::Put,
        &format!("/api/v1/namespaces/{}/secrets/db", f.pod.namespace),
        Some(db),
    );
    let rv_other = f.rv("other");
    let (out, events) = kube_audit(&f.pod.namespace, || f.sync(entries, &[]));
    let log = assert_ok(&out);
    assert!(
        log.contains(
            "secret db was changed outside the synchronizer; restoring it from vault secret"
        ),
        "{log}"
    );
    assert!(!log.contains("hacked"), "values never logged: {log}");
    assert_eq!(f.data("db"), kv(&[("password", "p"), ("user", "u")]));
    assert_eq!(
        f.rv("other"),
        rv_other,
        "the unchanged Secret is not written"
    );
    assert_eq!(
        verbs(&events),
        ["list", "list", "get", "update"],
        "{events:?}"
    );

    // And the run after the repair is a no-op again.
    let before = f.snapshot();
    let (out, events) = kube_audit(&f.pod.namespace, || f.sync(entries, &[]));
    assert_ok(&out);
    assert_eq!(verbs(&events), ["list", "list"]);
    assert_eq!(f.snapshot(), before);
}

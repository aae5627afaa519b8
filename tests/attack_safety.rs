//! Attacks on the synchronizer's ownership rules (issue 20), as an
//! operator making mistakes would make them, against the real stack
//! (OpenBao, kube-apiserver). Each test failed on the main it was written
//! against.

mod support;

use serde_json::{json, Value};
use support::*;
use vault_kubernetes::http::Method;

fn rv(secret: &Value) -> String {
    secret["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn value(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap();
    String::from_utf8(vault_kubernetes::base64::decode(b64).unwrap()).unwrap()
}

/// A synchronizer without identity (its Role cannot read pods, no
/// `SYNCHRONIZER_ID`) writes `x` from one Vault path; another one, with an
/// identity, maps the same name from another path. Adoption is for
/// Secrets written before owners existed *for the same secret*: taking this
/// one would silently replace the first writer's credentials with other
/// ones and lock the first writer out (and against a Go synchronizer still
/// running, which rewrites it every run, flap). The second must leave it
/// and say so, as for an owned Secret.
#[test]
fn adoption_never_takes_a_secret_written_from_another_vault_path() {
    let (pod, base) = pod_with_policy("adp", kv2_rules, &["vk-demo"]);
    pod.login();
    stack().kv_put("secret", &format!("{base}/u/x"), json!({"v": "from-u"}));
    stack().kv_put("secret", &format!("{base}/k/x"), json!({"v": "from-k"}));
    let first = format!("secret/{base}/u/x");
    let no_identity = [
        ("VAULT_SECRETS", first.as_str()),
        ("SYNCHRONIZER_ID", ""),
        ("POD_NAME", "no-such-pod"),
    ];
    let log = assert_ok(&pod.run(SYNCHRONIZER, &no_identity));
    assert!(log.contains("no synchronizer identity"), "{log}");
    let before = pod.secret("x").unwrap();
    assert_eq!(value(&before, "v"), "from-u");

    let out = pod.run(
        SYNCHRONIZER,
        &[
            ("VAULT_SECRETS", &format!("secret/{base}/k/x")),
            ("SYNCHRONIZER_ID", "team-k"),
        ],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(!log.contains("adopt secret x"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARNING: secret x belongs to")
                && l.contains(&first)
                && l.contains("team-k")),
        "{log}"
    );
    let after = pod.secret("x").unwrap();
    assert_eq!(rv(&after), rv(&before), "not written");
    assert_eq!(value(&after, "v"), "from-u");

    // The first writer still keeps it fresh.
    stack().kv_put("secret", &format!("{base}/u/x"), json!({"v": "from-u2"}));
    assert_ok(&pod.run(SYNCHRONIZER, &no_identity));
    assert_eq!(value(&pod.secret("x").unwrap(), "v"), "from-u2");
}

/// A bad `POD_NAME` is a configuration error naming the variable and the
/// value, not a silent "no pod name" that turns pruning off.
#[test]
fn an_invalid_pod_name_is_a_configuration_error() {
    let pod = Pod::new(RoleOptions::default());
    pod.login();
    for bad in ["My_Pod", "a..b", "-x"] {
        let out = pod.run(
            SYNCHRONIZER,
            &[
                ("VAULT_SECRETS", "secret/k8s/first"),
                ("SYNCHRONIZER_ID", ""),
                ("POD_NAME", bad),
            ],
        );
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(
            log.contains("configuration error: POD_NAME") && log.contains(&format!("{bad:?}")),
            "{log}"
        );
        assert!(pod.secret_names().is_empty(), "nothing written");
    }
}

/// Two synchronizers with one certificate entry mapped to one Secret name:
/// the second must not write its re-issue claim on the first's Secret (a
/// write on what is not ours, which also makes the owner's replicas wait
/// out the claim), nor issue a certificate it cannot deliver.
#[test]
fn a_certificate_secret_of_another_synchronizer_is_never_claimed() {
    let base = unique("acl");
    let policy = format!("p-{base}");
    stack().policy(
        &policy,
        &format!("path \"pki/issue/{base}*\" {{ capabilities = [\"update\"] }}\n"),
    );
    let policies = ["vk-demo", policy.as_str()];
    let pod = Pod::new(RoleOptions {
        policies: &policies,
        ..Default::default()
    });
    pod.login();
    stack().vault(
        Method::Post,
        &format!("pki/roles/{base}"),
        Some(
            json!({"allowed_domains": ["vk.test"], "allow_subdomains": true,
                    "key_type": "ec", "max_ttl": "1h", "generate_lease": true}),
        ),
    );
    let entry = format!("cert:pki/issue/{base}?common_name=web.vk.test&ttl=6s:web-tls");
    assert_ok(&pod.run(
        SYNCHRONIZER,
        &[("VAULT_SECRETS", &entry), ("SYNCHRONIZER_ID", "team-a")],
    ));
    let before = pod.secret("web-tls").unwrap();
    // Past 2/3 of the certificate's 6 s: due for a re-issue.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (out, issues) = vault_audit(&format!("pki/issue/{base}"), || {
        pod.run(
            SYNCHRONIZER,
            &[("VAULT_SECRETS", &entry), ("SYNCHRONIZER_ID", "team-b")],
        )
    });
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("web-tls belongs to team-a") && log.contains("team-b"),
        "{log}"
    );
    let after = pod.secret("web-tls").unwrap();
    assert_eq!(
        rv(&after),
        rv(&before),
        "team-a's Secret written by team-b: {}",
        after["metadata"]["annotations"]
    );
    assert!(issues.is_empty(), "{} certificates issued", issues.len());
}

/// The file target's record emptied or edited by a co-container (or by
/// hand) while the directories it listed are there: as with a deleted
/// record, the run stops, naming the directory and the record, with
/// nothing written or deleted; rotation never stops silently with exit 0.
#[test]
fn an_emptied_record_stops_the_file_target() {
    let (pod, base) = pod_with_policy("rec", kv2_rules, &["vk-demo"]);
    pod.login();
    let target = pod.dir.join("secrets");
    std::fs::create_dir(&target).unwrap();
    stack().kv_put("secret", &format!("{base}/f/one"), json!({"v": "1"}));
    stack().kv_put("secret", &format!("{base}/f/two"), json!({"v": "1"}));
    let env = [
        ("VAULT_SECRETS", format!("secret/{base}/f/")),
        ("SYNCHRONIZER_TARGET_DIR", target.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_ok(&pod.run(SYNCHRONIZER, &env));
    let read = |name: &str| std::fs::read_to_string(target.join(name).join("v")).unwrap();
    let record = target.join(".vault-kubernetes.json");
    let kept = std::fs::read_to_string(&record).unwrap();
    stack().kv_put("secret", &format!("{base}/f/one"), json!({"v": "2"}));
    let edited: Value = serde_json::from_str(&kept).unwrap();
    let mut edited = edited;
    edited["secrets"].as_object_mut().unwrap().remove("one");
    for damaged in [r#"{"secrets":{}}"#.to_string(), edited.to_string()] {
        std::fs::write(&record, &damaged).unwrap();
        let out = pod.run(SYNCHRONIZER, &env);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{damaged}: {log}");
        assert!(
            log.contains(&format!(
                "{}/one is laid out by a synchronizer",
                target.display()
            )) && log.contains(".vault-kubernetes.json"),
            "{log}"
        );
        assert_eq!(read("one"), "1", "nothing written");
        assert_eq!(std::fs::read_to_string(&record).unwrap(), damaged);
    }
    std::fs::write(&record, &kept).unwrap();
    assert_ok(&pod.run(SYNCHRONIZER, &env));
    assert_eq!(read("one"), "2", "rotation resumes");
    assert_eq!(read("two"), "1");
}

/// Creates `kind` objects in `ns` through the admin; returns the object.
fn create(ns: &str, api: &str, resource: &str, body: Value) -> Value {
    let prefix = if api == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api}")
    };
    stack().kube(
        Method::Post,
        &format!("{prefix}/namespaces/{ns}/{resource}"),
        Some(body),
    )
}

/// A CronJob's runs are each another Job (`sync-29000001`, then
/// `sync-29000002`): with the Job as identity, every run after the first
/// found the Secrets of the one before another synchronizer's (exit 1,
/// rotation stopped for good). The CronJob is the identity, as the
/// Deployment is for a ReplicaSet's pods; without `get` on jobs there is
/// no identity (nothing pruned) and the warning says which RBAC to add.
#[test]
fn the_runs_of_a_cronjob_share_one_identity() {
    let (pod, base) = pod_with_policy("cj", kv2_rules, &["vk-demo"]);
    pod.login();
    let ns = pod.namespace.clone();
    let role = |name: &str, rules: Value| {
        create(
            &ns,
            "rbac.authorization.k8s.io/v1",
            "roles",
            json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":name},"rules":rules}),
        );
        create(
            &ns,
            "rbac.authorization.k8s.io/v1",
            "rolebindings",
            json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":name},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":name},
            "subjects":[{"kind":"ServiceAccount","name":pod.service_account,"namespace":ns}]}),
        );
    };
    role(
        "identity",
        json!([{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},
               {"apiGroups":["apps"],"resources":["replicasets"],"verbs":["get"]}]),
    );
    let spec =
        json!({"restartPolicy":"Never","containers":[{"name":"c","image":"example.invalid/none"}]});
    let cj = create(
        &ns,
        "batch/v1",
        "cronjobs",
        json!({"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"sync"},
            "spec":{"schedule":"0 * * * *","jobTemplate":{"spec":{"template":{"spec":spec}}}}}),
    );
    let run_pod = |job: &str| -> String {
        let labels = json!({"run": job});
        let j = create(
            &ns,
            "batch/v1",
            "jobs",
            json!({"apiVersion":"batch/v1","kind":"Job","metadata":{"name":job,
                "ownerReferences":[{"apiVersion":"batch/v1","kind":"CronJob","name":"sync",
                    "uid":cj["metadata"]["uid"],"controller":true}]},
                "spec":{"manualSelector":true,"selector":{"matchLabels":labels},
                    "template":{"metadata":{"labels":labels},"spec":spec}}}),
        );
        let name = format!("{job}-x2v7q");
        create(
            &ns,
            "v1",
            "pods",
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"labels":labels,
                "ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":job,
                    "uid":j["metadata"]["uid"],"controller":true}]},"spec":spec}),
        );
        name
    };
    let (first, second) = (run_pod("sync-29000001"), run_pod("sync-29000002"));
    stack().kv_put("secret", &format!("{base}/cj/db"), json!({"v": "1"}));
    let secrets = format!("secret/{base}/cj/");
    let sync = |pod_name: &str| {
        pod.run(
            SYNCHRONIZER,
            &[
                ("VAULT_SECRETS", secrets.as_str()),
                ("SYNCHRONIZER_ID", ""),
                ("POD_NAME", pod_name),
            ],
        )
    };

    // Without get on jobs: no identity, and the warning names the RBAC.
    let log = assert_ok(&sync(&first));
    assert!(
        log.contains("no synchronizer identity") && log.contains("get on batch/jobs"),
        "{log}"
    );
    role(
        "jobs",
        json!([{"apiGroups":["batch"],"resources":["jobs"],"verbs":["get"]}]),
    );
    let log = assert_ok(&sync(&first));
    assert!(log.contains("synchronizer identity: CronJob/sync"), "{log}");
    // The next run, another Job of the same CronJob, keeps the Secret fresh.
    stack().kv_put("secret", &format!("{base}/cj/db"), json!({"v": "2"}));
    let log = assert_ok(&sync(&second));
    assert!(log.contains("synchronizer identity: CronJob/sync"), "{log}");
    assert!(log.contains("update secret db"), "{log}");
    assert_eq!(value(&pod.secret("db").unwrap(), "v"), "2");
}

/// A container that can write the parent of `SYNCHRONIZER_TARGET_DIR`
/// (the target is a folder of a shared volume, not its mount point) puts
/// a link to another synchronizer's directory in its place while a
/// sidecar runs. The sidecar's lock was taken on the first directory, and
/// the path was resolved again at every run: it followed the link and
/// pruned the other synchronizer's directories. Now every run must open
/// the directory the first one opened; another stops the run.
#[test]
fn a_target_directory_swapped_for_a_link_is_not_followed() {
    let (pod, base) = pod_with_policy("tdl", kv2_rules, &["vk-demo"]);
    pod.login();
    stack().kv_put("secret", &format!("{base}/a/one"), json!({"v": "1"}));
    stack().kv_put("secret", &format!("{base}/b/three"), json!({"v": "3"}));
    let volume = pod.dir.join("volume");
    let (mine, theirs) = (volume.join("mine"), volume.join("theirs"));
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::create_dir_all(&theirs).unwrap();
    let env = |dir: &std::path::Path, folder: &str, extra: &[(&str, &str)]| {
        let mut changes = vec![
            ("VAULT_SECRETS", format!("secret/{base}/{folder}/")),
            ("SYNCHRONIZER_TARGET_DIR", dir.display().to_string()),
        ];
        changes.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let changes: Vec<(&str, &str)> = changes.iter().map(|(k, v)| (*k, v.as_str())).collect();
        with(&pod.env(), &changes)
    };
    assert_ok(&run(SYNCHRONIZER, env(&theirs, "b", &[])));
    let sidecar = spawn(SYNCHRONIZER, env(&mine, "a", &[("SYNC_INTERVAL", "1s")]));
    assert!(wait_until(std::time::Duration::from_secs(10), || mine
        .join("one/v")
        .exists()));
    std::fs::rename(&mine, volume.join("mine.old")).unwrap();
    std::os::unix::fs::symlink(&theirs, &mine).unwrap();
    // Three more cycles.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let log = stderr(&stop_with_sigterm(sidecar));
    assert!(!log.contains("delete directory"), "{log}");
    assert!(
        log.contains("is no longer the directory this synchronizer started with"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("three/v")).unwrap(),
        "3",
        "the other synchronizer's directory is kept"
    );
    assert!(!theirs.join("one").exists(), "nothing written there");
}

/// A rollout: the old and the new pods of one Deployment share its
/// identity but map different Secrets (`VAULT_SECRETS` changed in the pod
/// template). Each run deleted what the other wrote, so new pods could
/// start while their Secret was missing. A Secret records the rollout that
/// wrote it; the old revision neither prunes nor overwrites what the new
/// one wrote, and the new one still prunes what it no longer maps.
#[test]
fn a_rollout_never_prunes_or_overwrites_what_the_newer_pods_write() {
    let (pod, base) = pod_with_policy("ro", kv2_rules, &["vk-demo"]);
    pod.login();
    let ns = pod.namespace.clone();
    create(
        &ns,
        "rbac.authorization.k8s.io/v1",
        "roles",
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"identity"},
            "rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},
                     {"apiGroups":["apps"],"resources":["replicasets"],"verbs":["get"]}]}),
    );
    create(
        &ns,
        "rbac.authorization.k8s.io/v1",
        "rolebindings",
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"identity"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"identity"},
            "subjects":[{"kind":"ServiceAccount","name":pod.service_account,"namespace":ns}]}),
    );
    // The objects the Deployment controller would make (the host stack
    // runs none): the Deployment, one ReplicaSet per revision, a pod each.
    let labels = json!({"app": "web"});
    let spec = json!({"containers":[{"name":"c","image":"example.invalid/none"}]});
    let deployment = create(
        &ns,
        "apps/v1",
        "deployments",
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
            "spec":{"replicas":0,"selector":{"matchLabels":labels},
                "template":{"metadata":{"labels":labels},"spec":spec}}}),
    );
    let pod_of_revision = |revision: u32| -> String {
        let rs = create(
            &ns,
            "apps/v1",
            "replicasets",
            json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":format!("web-r{revision}"),
                "annotations":{"deployment.kubernetes.io/revision":revision.to_string()},
                "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"web",
                    "uid":deployment["metadata"]["uid"],"controller":true}]},
                "spec":{"replicas":0,"selector":{"matchLabels":labels},
                    "template":{"metadata":{"labels":labels},"spec":spec}}}),
        );
        let name = format!("web-r{revision}-x2v7q");
        create(
            &ns,
            "v1",
            "pods",
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"labels":labels,
                "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":format!("web-r{revision}"),
                    "uid":rs["metadata"]["uid"],"controller":true}]},"spec":spec}),
        );
        name
    };
    let (old, new) = (pod_of_revision(1), pod_of_revision(2));
    for (path, v) in [
        ("a", "a1"),
        ("b", "b1"),
        ("shared-old", "o"),
        ("shared-new", "n"),
    ] {
        stack().kv_put("secret", &format!("{base}/{path}"), json!({ "v": v }));
    }
    // The old template maps a and `shared` from one path; the new one b
    // and `shared` from another.
    let old_list = format!("secret/{base}/a,secret/{base}/shared-old:shared");
    let new_list = format!("secret/{base}/b,secret/{base}/shared-new:shared");
    let sync = |pod_name: &str, list: &str| {
        pod.run(
            SYNCHRONIZER,
            &[
                ("VAULT_SECRETS", list),
                ("SYNCHRONIZER_ID", ""),
                ("POD_NAME", pod_name),
            ],
        )
    };

    let log = assert_ok(&sync(&old, &old_list));
    assert!(
        log.contains("synchronizer identity: Deployment/web (rollout revision 1)"),
        "{log}"
    );
    let log = assert_ok(&sync(&new, &new_list));
    assert!(log.contains("(rollout revision 2)"), "{log}");
    // The new revision prunes what it no longer maps.
    assert!(log.contains("delete secret a"), "{log}");
    assert_eq!(value(&pod.secret("shared").unwrap(), "v"), "n");
    let b = rv(&pod.secret("b").unwrap());
    let shared = rv(&pod.secret("shared").unwrap());

    // The old pods run on until they are replaced: they recreate their own
    // Secret, but leave the new revision's alone.
    let log = assert_ok(&sync(&old, &old_list));
    assert!(!log.contains("delete secret b"), "{log}");
    assert!(log.contains("secret b was written by revision 2"), "{log}");
    assert!(
        log.contains("secret shared was written by revision 2"),
        "{log}"
    );
    assert_eq!(rv(&pod.secret("b").unwrap()), b);
    assert_eq!(rv(&pod.secret("shared").unwrap()), shared);
    assert_eq!(value(&pod.secret("shared").unwrap(), "v"), "n");
    assert!(pod.secret("a").is_some());
}

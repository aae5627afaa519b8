//! The synchronizer's file target (`SYNCHRONIZER_TARGET_DIR`) against the
//! real stack: a pod-like process with a Vault token and no Kubernetes
//! access at all (no Role binding, no API server address), writing Secret
//! volume layouts into a directory of its own.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A pod whose service account has no Role binding, a token from the
/// authenticator, a KV area `secret/<base>/` and a target directory.
struct Fixture {
    pod: Pod,
    base: String,
    target: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let (pod, base) = pod_with_policy("kvf", kv2_rules, &[]);
        // No Kubernetes permissions for this pod: the file target needs none.
        pod.unbind_role();
        pod.login();
        let target = pod.dir.join("secrets");
        std::fs::create_dir(&target).unwrap();
        Fixture { pod, base, target }
    }

    fn put(&self, path: &str, data: Value) {
        stack().kv_put("secret", &format!("{}/{path}", self.base), data);
    }

    /// The synchronizer's environment: Vault and the target, nothing of Kubernetes.
    fn env(&self, secrets: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let secrets = secrets.replace("$B", &self.base);
        let mut env = vec![
            (
                "VAULT_ADDR".to_string(),
                stack().get("VAULT_ADDR").to_string(),
            ),
            (
                "VAULT_TOKEN_PATH".to_string(),
                self.pod.token_path().display().to_string(),
            ),
            ("VAULT_SECRETS".to_string(), secrets),
            (
                "SYNCHRONIZER_TARGET_DIR".to_string(),
                self.target.display().to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn sync(&self, secrets: &str, extra: &[(&str, &str)]) -> Output {
        run(SYNCHRONIZER, self.env(secrets, extra))
    }

    fn read(&self, name: &str, key: &str) -> String {
        std::fs::read_to_string(self.target.join(name).join(key)).unwrap()
    }

    /// Sorted entries of a directory.
    fn entries(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn data_link(&self, name: &str) -> String {
        std::fs::read_link(self.target.join(name).join("..data"))
            .unwrap()
            .display()
            .to_string()
    }
}

fn is_timestamp(name: &str) -> bool {
    let b = name.as_bytes();
    name.starts_with("..20") && b.len() > 22 && b[21] == b'.'
}

#[test]
fn secret_volume_layout_modes_and_no_kubernetes_requests() {
    let f = Fixture::new();
    f.put(
        "app/db",
        json!({"user": "u", "password": "p", "port": 5432}),
    );
    f.put("dir/a", json!({"k": "a"}));
    f.put("dir/b", json!({"k": "b"}));
    // The target as an `fsGroup` volume: group 4545, set-group-ID.
    std::os::unix::fs::chown(&f.target, None, Some(4545)).unwrap();
    std::fs::set_permissions(
        &f.target,
        std::os::unix::fs::PermissionsExt::from_mode(0o2777),
    )
    .unwrap();
    let entries = "secret/$B/app/db, secret/$B/dir/";
    let (out, events) = kube_audit(&f.pod.namespace, || f.sync(entries, &[]));
    let log = assert_ok(&out);
    assert_eq!(events, Vec::<Value>::new(), "no Kubernetes request at all");
    assert!(
        log.contains(&format!(
            "create directory {}/db from vault secret secret/{}/app/db",
            f.target.display(),
            f.base
        )),
        "{log}"
    );
    assert!(!log.contains("5432") && !log.contains("\"p\""), "{log}");

    assert_eq!(
        f.entries(&f.target),
        [".vault-kubernetes.json", "a", "b", "db"]
    );
    let db = f.target.join("db");
    let names = f.entries(&db);
    assert_eq!(names.len(), 5, "{names:?}");
    // The kubelet's layout: `..<UTC time>.<digits>`, `..data` and key links.
    let ts = names[0].clone();
    assert!(is_timestamp(&ts), "{names:?}");
    assert_eq!(&names[1..], ["..data", "password", "port", "user"]);
    assert_eq!(f.data_link("db"), ts);
    for key in ["password", "port", "user"] {
        assert_eq!(
            std::fs::read_link(db.join(key)).unwrap(),
            Path::new("..data").join(key)
        );
        assert_eq!(mode(&db.join(&ts).join(key)), 0o440, "{key}");
        let gid = std::fs::metadata(db.join(&ts).join(key)).unwrap().gid();
        assert_eq!(gid, 4545, "{key}: the volume's group");
    }
    assert_eq!(mode(&db.join(&ts)), 0o755);
    assert_eq!(f.read("db", "user"), "u");
    assert_eq!(f.read("db", "port"), "5432");
    assert_eq!(f.read("b", "k"), "b");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.target.join(".vault-kubernetes.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["secrets"]["a"], format!("secret/{}/dir/a", f.base));

    // No-op: the same Vault reads, no Kubernetes request, nothing written.
    let inode = std::fs::metadata(db.join("user")).unwrap().ino();
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().mtime_nsec();
    let (dir_mtime, db_mtime) = (stamp(&f.target), stamp(&db));
    let ((out, events), vault) = vault_audit(&f.base, || {
        kube_audit(&f.pod.namespace, || f.sync(entries, &[]))
    });
    let log = assert_ok(&out);
    assert!(log.contains("unchanged 3"), "{log}");
    assert_eq!(events, Vec::<Value>::new());
    // Two mount lookups, one list, three reads.
    assert_eq!(vault.len(), 6, "{vault:?}");
    assert_eq!(f.data_link("db"), ts);
    assert_eq!(std::fs::metadata(db.join("user")).unwrap().ino(), inode);
    assert_eq!((stamp(&f.target), stamp(&db)), (dir_mtime, db_mtime));

    // Mode and owner are configurable; a change of either rewrites the files.
    let log = assert_ok(&f.sync(
        entries,
        &[
            ("SYNCHRONIZER_FILE_MODE", "0400"),
            ("SYNCHRONIZER_FILE_OWNER", "4242:4343"),
        ],
    ));
    assert!(log.contains("updated 3"), "{log}");
    let file = std::fs::canonicalize(db.join("user")).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o400, 4242, 4343)
    );
    assert_eq!(f.entries(&db).len(), 5, "the old data directory is gone");
}

#[test]
fn hand_edits_are_restored_and_prune_removes_only_what_it_created() {
    let f = Fixture::new();
    f.put("app/keep", json!({"k1": "1", "k2": "2"}));
    f.put("app/drop", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/app/keep, secret/$B/app/drop", &[]));

    // A directory we did not create is left alone, even when listed.
    std::fs::create_dir(f.target.join("mine")).unwrap();
    std::fs::write(f.target.join("mine/v"), "local").unwrap();
    f.put("app/mine", json!({"v": "vault"}));
    // Someone edits a file by hand and leaves a note in "drop".
    let k1 = std::fs::canonicalize(f.target.join("keep/k1")).unwrap();
    std::fs::set_permissions(&k1, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::fs::write(&k1, "hacked").unwrap();
    std::fs::write(f.target.join("drop/notes.txt"), "theirs").unwrap();
    f.put("app/keep", json!({"k1": "1"}));

    let log = assert_ok(&f.sync("secret/$B/app/keep, secret/$B/app/mine", &[]));
    assert!(
        log.contains(&format!(
            "WARNING: ignoring directory {}/mine - not managed by synchronizer",
            f.target.display()
        )),
        "{log}"
    );
    assert_eq!(f.read("mine", "v"), "local");
    // Restored, and the key no longer in Vault is gone with its link.
    assert_eq!(f.read("keep", "k1"), "1");
    let keep = f.entries(&f.target.join("keep"));
    assert_eq!(keep.len(), 3, "{keep:?}");
    assert_eq!(keep[2], "k1");
    // Pruned: only our entries; their note and the directory holding it stay.
    assert!(
        log.contains("kept directory") && log.contains("did not create"),
        "{log}"
    );
    assert_eq!(f.entries(&f.target.join("drop")), ["notes.txt"]);
    assert_eq!(f.read("drop", "notes.txt"), "theirs");
    let manifest = std::fs::read_to_string(f.target.join(".vault-kubernetes.json")).unwrap();
    assert!(
        !manifest.contains("drop") && !manifest.contains("mine"),
        "{manifest}"
    );

    // An untouched directory of ours is removed whole; prune can be turned off.
    f.put("app/gone", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/app/keep, secret/$B/app/gone", &[]));
    assert_ok(&f.sync("secret/$B/app/keep", &[("SYNCHRONIZER_PRUNE", "false")]));
    assert!(f.target.join("gone/v").exists());
    let log = assert_ok(&f.sync("secret/$B/app/keep", &[]));
    assert!(log.contains("delete directory"), "{log}");
    assert!(!f.target.join("gone").exists());
    assert_eq!(
        f.entries(&f.target),
        [".vault-kubernetes.json", "drop", "keep", "mine"]
    );
}

#[test]
fn sidecar_swaps_a_secret_atomically_and_stops_on_sigterm() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let f = Fixture::new();
    f.put("app/live", json!({"a": "v1", "b": "v1"}));
    let child = spawn(
        SYNCHRONIZER,
        f.env("secret/$B/app/live", &[("SYNC_INTERVAL", "1s")]),
    );
    let dir = f.target.join("live");
    assert!(wait_until(Duration::from_secs(10), || dir
        .join("..data")
        .exists()));

    // A watcher like an application's on a mounted Secret: inotify on the directory.
    let mut inotify = inotify::Inotify::init().unwrap();
    inotify
        .watches()
        .add(&dir, inotify::WatchMask::MOVED_TO)
        .unwrap();

    // A reader that resolves ..data once and reads both keys from that
    // version must never see a mix, and the visible files never vanish.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut versions) = (0u32, Vec::<String>::new());
            while !stop.load(Ordering::SeqCst) && reads < 200_000 {
                let a = std::fs::read_to_string(dir.join("a")).expect("a always readable");
                let ts = std::fs::read_link(dir.join("..data")).unwrap();
                let pair = (
                    std::fs::read_to_string(dir.join(&ts).join("a")),
                    std::fs::read_to_string(dir.join(&ts).join("b")),
                );
                if let (Ok(x), Ok(y)) = pair {
                    assert_eq!(x, y, "one version through ..data");
                }
                if versions.last() != Some(&a) {
                    versions.push(a);
                }
                reads += 1;
            }
            versions
        })
    };
    f.put("app/live", json!({"a": "v2", "b": "v2"}));
    let swapped = wait_until(Duration::from_secs(10), || f.read("live", "b") == "v2");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let versions = reader.join().unwrap();
    assert!(swapped);
    assert_eq!(versions, ["v1", "v2"]);
    let mut buffer = [0u8; 4096];
    let events: Vec<String> = inotify
        .read_events(&mut buffer)
        .unwrap()
        .filter_map(|e| e.name.map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(events.contains(&"..data".to_string()), "{events:?}");

    stop_with_sigterm(child);
}

#[test]
fn missing_token_falls_back_to_existing_files_and_a_missing_target_is_an_error() {
    let f = Fixture::new();
    f.put("app/x", json!({"v": "1"}));
    f.put("dir/y", json!({"v": "1"}));
    let entries = "secret/$B/app/x, secret/$B/dir/";
    assert_ok(&f.sync(entries, &[]));
    std::fs::remove_file(f.pod.token_path()).unwrap();
    let log = assert_ok(&f.sync(entries, &[]));
    assert!(log.contains("cannot synchronize secrets - all secrets seems to be available therefore pod creation will continue"), "{log}");
    let out = f.sync(&format!("{entries}, secret/$B/app/missing"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    f.pod.login();
    let missing = f.pod.dir.join("nowhere");
    let out = run(
        SYNCHRONIZER,
        with(
            &f.env(entries, &[]),
            &[("SYNCHRONIZER_TARGET_DIR", &missing.display().to_string())],
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    // Found at start, before anything is read from Vault: one line naming
    // the variable and the directory.
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "target directory {} does not exist (SYNCHRONIZER_TARGET_DIR)",
            missing.display()
        )) && !log.contains("from vault")
            && log.lines().count() == 1,
        "{log}"
    );
}

/// A kubelet-like Secret volume `dir` with key `k`: what prune must never touch.
fn foreign_volume(dir: &Path) {
    std::fs::create_dir_all(dir.join("..2026_01_01_00_00_00.1")).unwrap();
    std::fs::write(dir.join("..2026_01_01_00_00_00.1/k"), "theirs").unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/k", dir.join("k")).unwrap();
}

#[test]
fn prune_never_leaves_the_target_through_a_tampered_record_or_a_symlink() {
    let f = Fixture::new();
    let other = f.pod.dir.join("other");
    foreign_volume(&other);
    f.put("app/keep", json!({"v": "1"}));
    f.put("app/linked", json!({"v": "1"}));
    assert_ok(&f.sync("secret/$B/app/keep, secret/$B/app/linked", &[]));

    // Our directory replaced by a symlink to another volume: pruning it
    // must not follow the link.
    std::fs::remove_dir_all(f.target.join("linked")).unwrap();
    std::os::unix::fs::symlink(&other, f.target.join("linked")).unwrap();
    let log = assert_ok(&f.sync("secret/$B/app/keep", &[]));
    assert_eq!(std::fs::read_to_string(other.join("k")).unwrap(), "theirs");
    assert!(log.contains("kept") && log.contains("linked"), "{log}");

    // A record naming paths outside the target: refused, nothing removed.
    let record = f.target.join(".vault-kubernetes.json");
    for bad in ["..", "../other", "/etc", "a/b", "."] {
        let body = json!({"secrets": {"keep": format!("secret/{}/app/keep", f.base), bad: "x"}});
        std::fs::write(&record, body.to_string()).unwrap();
        let out = f.sync("secret/$B/app/keep", &[]);
        let log = stderr(&out);
        assert!(!out.status.success(), "{bad}: {log}");
        assert!(log.contains(".vault-kubernetes.json"), "{bad}: {log}");
        assert_eq!(std::fs::read_to_string(other.join("k")).unwrap(), "theirs");
        assert!(other.join("..data").exists(), "{bad}");
    }
}

#[test]
fn a_second_synchronizer_on_the_same_target_is_refused_not_pruning_the_first() {
    let f = Fixture::new();
    f.put("app/a", json!({"v": "a"}));
    f.put("app/b", json!({"v": "b"}));
    let sidecar = spawn(
        SYNCHRONIZER,
        f.env("secret/$B/app/a", &[("SYNC_INTERVAL", "1s")]),
    );
    let up = wait_until(Duration::from_secs(10), || f.target.join("a/v").exists());
    // Another synchronizer pointed at the same directory with another
    // mapping would prune the first one's directories (and it theirs).
    let second = f.sync("secret/$B/app/b", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let a_survived = f.target.join("a/v").exists();
    stop_with_sigterm(sidecar);
    assert!(up);
    let log = stderr(&second);
    assert!(!second.status.success(), "{log}");
    assert!(log.contains("another synchronizer"), "{log}");
    assert!(a_survived);
    assert_eq!(f.read("a", "v"), "a");
    assert!(!f.target.join("b").exists());
    // Once the first has stopped, the directory is the second one's.
    assert_ok(&f.sync("secret/$B/app/b", &[]));
    assert_eq!(f.read("b", "v"), "b");
}

#[test]
fn a_new_key_appears_only_once_its_data_is_in_place() {
    let f = Fixture::new();
    f.put("app/grow", json!({"a": "1"}));
    assert_ok(&f.sync("secret/$B/app/grow", &[]));
    let dir = f.target.join("grow");
    let mut inotify = inotify::Inotify::init().unwrap();
    inotify
        .watches()
        .add(
            &dir,
            inotify::WatchMask::CREATE | inotify::WatchMask::MOVED_TO,
        )
        .unwrap();
    f.put("app/grow", json!({"a": "2", "b": "2"}));
    assert_ok(&f.sync("secret/$B/app/grow", &[]));
    let mut buffer = [0u8; 4096];
    let events: Vec<String> = inotify
        .read_events(&mut buffer)
        .unwrap()
        .filter_map(|e| e.name.map(|n| n.to_string_lossy().into_owned()))
        .collect();
    // As the kubelet does: a visible key is always readable, so the link
    // `b` comes after `..data` names the directory holding `b`.
    let at = |name: &str| events.iter().position(|e| e == name);
    assert!(at("..data").is_some() && at("b").is_some(), "{events:?}");
    assert!(at("..data") < at("b"), "{events:?}");
    assert_eq!(f.read("grow", "b"), "2");
}

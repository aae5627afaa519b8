//! Leased entries (`creds:` and `cert:` in `VAULT_SECRETS`) against the real
//! stack: OpenBao's database engine creating login roles in the stack's
//! PostgreSQL, and its PKI engine. Credentials are checked with `psql`,
//! certificates with `openssl verify`, renewals and issues in OpenBao's
//! audit log, revocations in `pg_roles` and in OpenBao's lease lookups.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::*;
use vault_kubernetes::http::Method;

/// A pod with a Vault token whose policies give the leased roles of this
/// test (and the stack's `app` roles), and a target directory.
struct Fixture {
    pod: Pod,
    base: String,
    target: PathBuf,
}

impl Fixture {
    fn new(secrets_sink: bool) -> Fixture {
        Fixture::with_token(secrets_sink, "1h", "24h")
    }

    /// With the pod's tokens lasting `ttl`, at most `max_ttl`.
    fn with_token(secrets_sink: bool, ttl: &str, max_ttl: &str) -> Fixture {
        let base = unique("ls");
        let s = stack();
        let policy = format!("p-{base}");
        s.policy(
            &policy,
            &format!(
                "path \"database/creds/{base}*\" {{ capabilities = [\"read\"] }}\n\
                 path \"pki/issue/{base}*\" {{ capabilities = [\"update\"] }}\n"
            ),
        );
        let policies = ["vk-demo", "vk-leased", policy.as_str()];
        let pod = Pod::new(RoleOptions {
            policies: &policies,
            ttl,
            max_ttl,
            ..Default::default()
        });
        if !secrets_sink {
            pod.unbind_role();
        }
        assert_ok(&run(AUTHENTICATOR, pod.env()));
        let target = pod.dir.join("secrets");
        std::fs::create_dir(&target).unwrap();
        Fixture { pod, base, target }
    }

    /// A database role `<base><suffix>` with these TTLs.
    fn db_role(&self, suffix: &str, ttl: &str, max_ttl: &str) -> String {
        let name = format!("{}{suffix}", self.base);
        stack().vault(
            Method::Post,
            &format!("database/roles/{name}"),
            Some(json!({
                "db_name": "postgres",
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "default_ttl": ttl,
                "max_ttl": max_ttl,
            })),
        );
        name
    }

    /// A PKI role `<base><suffix>` like the stack's `app`, with leases.
    fn pki_role(&self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.base);
        stack().vault(
            Method::Post,
            &format!("pki/roles/{name}"),
            Some(json!({
                "allowed_domains": ["vk.test"], "allow_subdomains": true, "allow_ip_sans": true,
                "key_type": "ec", "max_ttl": "1h", "generate_lease": true,
            })),
        );
        name
    }

    /// A database role of 1 h leases and a PKI role, both `<base><suffix>`,
    /// and the entries delivering them as `db` and `tls`: (db role, PKI
    /// role, entries).
    fn both(&self, suffix: &str) -> (String, String, String) {
        let role = self.db_role(suffix, "1h", "2h");
        let pki = self.pki_role(suffix);
        let entries = format!(
            "creds:database/creds/{role}:db,cert:pki/issue/{pki}?common_name={suffix}.vk.test&ttl=10m:tls"
        );
        (role, pki, entries)
    }

    fn env(&self, secrets: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "VAULT_ADDR".to_string(),
                stack().get("VAULT_ADDR").to_string(),
            ),
            (
                "VAULT_TOKEN_PATH".to_string(),
                self.pod.token_path().display().to_string(),
            ),
            ("VAULT_SECRETS".to_string(), secrets.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn files_env(&self, secrets: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let target = self.target.display().to_string();
        let mut env = self.env(secrets, extra);
        env.push(("SYNCHRONIZER_TARGET_DIR".into(), target));
        env
    }

    /// The pod's environment plus the mapping: the Secrets sink.
    fn secrets_env(&self, secrets: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.pod.env();
        env.push(("VAULT_SECRETS".into(), secrets.to_string()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn read(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.target.join(name).join(key)).ok()
    }

    fn text(&self, name: &str, key: &str) -> String {
        String::from_utf8(self.read(name, key).unwrap_or_default()).unwrap()
    }

    /// Username and password of one version, as an application reads a
    /// Secret volume: `..data` resolved once (the key links may move on
    /// between two reads), again if the version went away meanwhile.
    fn credentials(&self, name: &str) -> (String, String) {
        let dir = self.target.join(name);
        for _ in 0..5 {
            let Ok(version) = std::fs::read_link(dir.join("..data")) else {
                continue;
            };
            let read = |key: &str| std::fs::read_to_string(dir.join(&version).join(key));
            if let (Ok(user), Ok(password)) = (read("username"), read("password")) {
                record_secret(&password);
                return (user, password);
            }
        }
        panic!("no consistent credentials in {}", dir.display());
    }
}

fn spawn(env: Vec<(String, String)>) -> Child {
    spawn_program(SYNCHRONIZER, env)
}

fn pg_bin(name: &str) -> String {
    format!("{}/{name}", stack().get("VK_PG_BIN"))
}

/// `select current_user` as this login role, by TCP on loopback.
fn psql(user: &str, password: &str) -> Result<String, String> {
    let s = stack();
    let out = Command::new(pg_bin("psql"))
        .env_clear()
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .args([
            "-X",
            "-h",
            s.get("VK_POSTGRES_HOST"),
            "-p",
            s.get("VK_POSTGRES_PORT"),
        ])
        .args(["-U", user, "-d", "postgres", "-Atc", "select current_user"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether PostgreSQL has this role (`pg_roles`), asked as the stack's admin.
fn role_exists(user: &str) -> bool {
    let s = stack();
    let password = std::fs::read_to_string(s.get("VK_POSTGRES_ADMIN_PASSWORD_FILE")).unwrap();
    record_secret(&password);
    let out = Command::new(pg_bin("psql"))
        .env_clear()
        .env("PGPASSWORD", password)
        .args([
            "-X",
            "-h",
            s.get("VK_POSTGRES_HOST"),
            "-p",
            s.get("VK_POSTGRES_PORT"),
        ])
        .args(["-U", s.get("VK_POSTGRES_ADMIN"), "-d", "postgres", "-Atc"])
        .arg(format!(
            "select count(*) from pg_roles where rolname = '{user}'"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

/// `openssl verify -CAfile ca.crt tls.crt` in `dir`.
fn openssl_verify(dir: &std::path::Path) -> Output {
    Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("ca.crt"))
        .arg(dir.join("tls.crt"))
        .output()
        .unwrap()
}

/// notBefore and notAfter of a PEM certificate, as seconds since the epoch.
fn validity(pem: &[u8]) -> (u64, u64) {
    let v = vault_kubernetes::x509::validity(pem).expect("a certificate");
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    (secs(v.not_before), secs(v.not_after))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Audit events of this pod's token (its service account's namespace).
fn of_pod<'a>(events: &'a [Value], pod: &Pod) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["auth"]["metadata"]["service_account_namespace"] == pod.namespace.as_str())
        .collect()
}

#[test]
fn credentials_work_are_renewed_and_replaced_before_max_ttl_across_the_swap() {
    let f = Fixture::new(false);
    // 9 s leases up to 24 s: renewed at about 6 s and 12 s, capped at about
    // 18 s, new credentials when 3 s are left.
    let role = f.db_role("db", "9s", "24s");
    let entry = format!("creds:database/creds/{role}:db");
    let start = Instant::now();
    let (observed, events) = vault_audit("sys/leases/renew", || {
        let child = spawn(f.files_env(&entry, &[("SYNC_INTERVAL", "1h")]));
        assert!(
            wait_until(Duration::from_secs(10), || f
                .read("db", "password")
                .is_some()),
            "no credentials delivered"
        );
        let first_user = f.text("db", "username");
        let mut users = vec![first_user.clone()];
        let mut connections = 0;
        let mut swapped_after = None;
        // The application: a new connection every 300 ms with whatever the
        // files hold, across the swap.
        while start.elapsed() < Duration::from_secs(27) {
            let (user, password) = f.credentials("db");
            if user != *users.last().unwrap() {
                users.push(user.clone());
                swapped_after.get_or_insert(start.elapsed());
            }
            assert_eq!(
                psql(&user, &password).as_deref(),
                Ok(user.as_str()),
                "as {user}"
            );
            connections += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        let out = stop_with_sigterm(child);
        (users, connections, swapped_after, stderr(&out))
    });
    let (users, connections, swapped_after, log) = observed;
    assert!(connections > 20, "{connections} connections");
    assert!(users.len() >= 2, "never swapped: {log}");
    // New credentials before the first lease's max TTL (24 s after start).
    let swapped_after = swapped_after.unwrap();
    assert!(
        swapped_after < Duration::from_secs(24),
        "{swapped_after:?}\n{log}"
    );
    let renewals = of_pod(&events, &f.pod);
    assert!(renewals.len() >= 3, "{} renewals\n{log}", renewals.len());
    assert!(
        renewals.iter().all(|e| e["error"].is_null()),
        "{renewals:?}"
    );
    assert!(log.contains("lease renewed for 9s"), "{log}");
    assert!(log.contains("(the lease reached its max TTL)"), "{log}");
    // Files as KV files are: mode 0440, in the Secret-volume layout.
    let meta = std::fs::metadata(f.target.join("db/..data/password")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o440
    );
    assert!(
        !log.contains(&f.text("db", "password")),
        "password in the log"
    );
}

#[test]
fn certificate_verifies_and_is_reissued_at_two_thirds_never_on_a_no_op_cycle() {
    let f = Fixture::new(false);
    let role = f.pki_role("web");
    // 30 s asked; OpenBao backdates notBefore by 30 s: a 60 s validity,
    // re-issued 40 s after notBefore (10 s after the issue), at most 44 s.
    let entry = format!(
        "cert:pki/issue/{role}?common_name=web.vk.test&alt_names=a.vk.test+b.vk.test&ip_sans=127.0.0.1&ttl=30s:web-tls"
    );
    let (observed, events) = vault_audit(&format!("pki/issue/{role}"), || {
        let child = spawn(f.files_env(&entry, &[("SYNC_INTERVAL", "1s")]));
        assert!(
            wait_until(Duration::from_secs(10), || f
                .read("web-tls", "tls.key")
                .is_some()),
            "no certificate delivered"
        );
        let first = f.read("web-tls", "tls.crt").unwrap();
        record_secret(&f.text("web-tls", "tls.key"));
        let dir = f.target.join("web-tls");
        let verify = openssl_verify(&dir);
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        // The chain follows the certificate in tls.crt.
        let crt = String::from_utf8(first.clone()).unwrap();
        assert_eq!(crt.matches("BEGIN CERTIFICATE").count(), 2, "{crt}");
        let (not_before, not_after) = validity(&first);
        assert_eq!(not_after - not_before, 60);
        let due = not_before + 40;
        // No-op cycles (one a second) until just before it is due: no issue.
        while now_secs() + 1 < due {
            assert_eq!(
                f.read("web-tls", "tls.crt").unwrap(),
                first,
                "re-issued early"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            wait_until(Duration::from_secs(10), || f
                .read("web-tls", "tls.crt")
                .unwrap()
                != first),
            "not re-issued by notBefore + 44 s"
        );
        let reissued_at = now_secs();
        record_secret(&f.text("web-tls", "tls.key"));
        let verify = openssl_verify(&dir);
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let out = stop_with_sigterm(child);
        (due, reissued_at, stderr(&out))
    });
    let (due, reissued_at, log) = observed;
    assert!(
        reissued_at >= due && reissued_at <= due + 7,
        "{due} {reissued_at}\n{log}"
    );
    assert_eq!(of_pod(&events, &f.pod).len(), 2, "{log}");
    assert!(log.contains("re-issued after"), "{log}");
}

#[test]
fn tls_secret_of_two_replicas_and_a_restart_is_issued_once() {
    let f = Fixture::new(true);
    let role = f.pki_role("ing");
    let entry = format!("cert:pki/issue/{role}?common_name=ing.vk.test&ttl=10m:ing-tls");
    let (logs, events) = vault_audit(&format!("pki/issue/{role}"), || {
        // Two replicas' init containers, one after the other, then both
        // sidecars at once, then a restart.
        let mut logs = Vec::new();
        for _ in 0..2 {
            let out = run(SYNCHRONIZER, f.secrets_env(&entry, &[]));
            logs.push(stderr(&out));
            assert!(out.status.success(), "{}", logs.last().unwrap());
        }
        let a = spawn(f.secrets_env(&entry, &[("SYNC_INTERVAL", "1s")]));
        let b = spawn(f.secrets_env(&entry, &[("SYNC_INTERVAL", "1s")]));
        std::thread::sleep(Duration::from_secs(3));
        logs.push(stderr(&stop_with_sigterm(a)));
        logs.push(stderr(&stop_with_sigterm(b)));
        logs
    });
    let logs = logs.join("\n");
    assert_eq!(of_pod(&events, &f.pod).len(), 1, "{logs}");
    let secret = f.pod.secret("ing-tls").unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = secret["data"].as_object().unwrap();
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    assert!(
        logs.contains("keeping the certificate in secret ing-tls"),
        "{logs}"
    );
}

#[test]
fn replicas_due_at_once_reissue_the_shared_certificate_once() {
    let f = Fixture::new(true);
    let role = f.pki_role("cl");
    let entry = format!("cert:pki/issue/{role}?common_name=cl.vk.test&ttl=30s:cl-tls");
    let crt = |f: &Fixture| {
        let secret = f.pod.secret("cl-tls").unwrap();
        secret["data"]["tls.crt"].as_str().unwrap().to_string()
    };
    let (observed, events) = vault_audit(&format!("pki/issue/{role}"), || {
        assert_ok(&run(SYNCHRONIZER, f.secrets_env(&entry, &[])));
        let first = crt(&f);
        let pem = vault_kubernetes::base64::decode(&first).unwrap();
        let (not_before, _) = validity(&pem);
        // Due 40 s after notBefore; another replica claimed the re-issue
        // until 48 s: both replicas below wait for the claim to end, then
        // wake at the same moment, and only one may win.
        let until = not_before + 48;
        let mut secret = f.pod.secret("cl-tls").unwrap();
        secret["metadata"]["annotations"]["vault-kubernetes/reissuing"] = until.to_string().into();
        stack().kube(
            Method::Put,
            &format!("/api/v1/namespaces/{}/secrets/cl-tls", f.pod.namespace),
            Some(secret),
        );
        let env = f.secrets_env(&entry, &[("SYNC_INTERVAL", "1h")]);
        let (a, b) = (spawn(env.clone()), spawn(env));
        let limit = Duration::from_secs((until + 15).saturating_sub(now_secs()));
        assert!(wait_until(limit, || crt(&f) != first), "never re-issued");
        let changed_at = now_secs();
        // The loser reads the Secret again 2 s after losing.
        std::thread::sleep(Duration::from_secs(4));
        let logs = [stop_with_sigterm(a), stop_with_sigterm(b)].map(|o| stderr(&o));
        (until, changed_at, logs.join("\n"))
    });
    let (until, changed_at, logs) = observed;
    assert!(
        changed_at >= until,
        "re-issued during another replica's claim\n{logs}"
    );
    // The first issue and one re-issue, not one per replica.
    assert_eq!(of_pod(&events, &f.pod).len(), 2, "{logs}");
    assert!(logs.contains("another replica re-issues"), "{logs}");
    assert_eq!(logs.matches("certificate issued").count(), 1, "{logs}");
}

#[test]
fn a_new_token_gets_new_leases_before_the_old_one_expires() {
    let f = Fixture::new(false);
    let (_, _, entries) = f.both("tk");
    let child = spawn(f.files_env(&entries, &[("SYNC_INTERVAL", "1h")]));
    assert!(wait_until(Duration::from_secs(10), || f
        .read("tls", "tls.key")
        .is_some()
        && f.read("db", "password").is_some()));
    let (user, cert) = (f.text("db", "username"), f.read("tls", "tls.crt").unwrap());
    // The renewer logs in again: a new token in the file.
    let started = Instant::now();
    assert_ok(&run(AUTHENTICATOR, f.pod.env()));
    assert!(
        wait_until(Duration::from_secs(5), || f.text("db", "username") != user
            && f.read("tls", "tls.crt").unwrap() != cert),
        "no new leases after the token changed"
    );
    let took = started.elapsed();
    let new_user = f.text("db", "username");
    let password = f.text("db", "password");
    record_secret(&password);
    assert_eq!(psql(&new_user, &password).as_deref(), Ok(new_user.as_str()));
    let log = stderr(&stop_with_sigterm(child));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        log.contains("new token: the old one's leases end with it"),
        "{log}"
    );
}

#[test]
fn the_renewers_new_login_gets_new_credentials_before_the_old_token_dies() {
    // Tokens of 8 s, at most 16 s: the renewer logs in again before the
    // first one dies, and the credentials it obtained die with it.
    let f = Fixture::with_token(false, "8s", "16s");
    let login = Instant::now();
    let role = f.db_role("re", "1h", "2h");
    let entry = format!("creds:database/creds/{role}:db");
    let renewer = spawn_program(RENEWER, with(&f.pod.env(), &[("VAULT_REAUTH", "true")]));
    let sync = spawn(f.files_env(&entry, &[("SYNC_INTERVAL", "1h")]));
    assert!(wait_until(Duration::from_secs(10), || f
        .read("db", "password")
        .is_some()));
    let (first, _) = f.credentials("db");
    assert!(
        wait_until(Duration::from_secs(20), || f.credentials("db").0 != first),
        "no new credentials after the renewer's new login"
    );
    let swapped = login.elapsed();
    // The first token's max TTL is 16 s from its login.
    assert!(swapped < Duration::from_secs(16), "{swapped:?}");
    // Once that token is gone, its lease went with it; the new ones work.
    std::thread::sleep(Duration::from_secs(18).saturating_sub(login.elapsed()));
    let (user, password) = f.credentials("db");
    assert_eq!(psql(&user, &password).as_deref(), Ok(user.as_str()));
    assert!(
        wait_until(Duration::from_secs(5), || !role_exists(&first)),
        "{first} outlived its token"
    );
    let log = stderr(&stop_with_sigterm(sync));
    stop_with_sigterm(renewer);
    assert!(
        log.contains("new token: the old one's leases end with it"),
        "{log}"
    );
}

fn spawn_program(bin: &str, env: Vec<(String, String)>) -> Child {
    command(bin, env)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn revoke_on_shutdown_drops_the_role_and_revokes_the_certificate() {
    let f = Fixture::new(false);
    let (_, pki, entries) = f.both("rv");
    let (child, events) = vault_audit(&format!("pki/issue/{pki}"), || {
        let child = spawn(f.files_env(
            &entries,
            &[
                ("SYNC_INTERVAL", "1h"),
                ("VAULT_REVOKE_ON_SHUTDOWN", "true"),
            ],
        ));
        assert!(wait_until(Duration::from_secs(10), || f
            .read("tls", "tls.key")
            .is_some()
            && f.read("db", "password").is_some()));
        child
    });
    let lease_id = events[0]["response"]["secret"]["lease_id"]
        .as_str()
        .map(str::to_string);
    let user = f.text("db", "username");
    assert!(role_exists(&user));
    let serial = cert_serial(&f.read("tls", "tls.crt").unwrap());
    let log = stderr(&stop_with_sigterm(child));
    assert!(!role_exists(&user), "{user} still in pg_roles\n{log}");
    assert_eq!(log.matches("lease revoked").count(), 2, "{log}");
    // The certificate is revoked (its lease's revocation puts it on the CRL).
    let cert = stack().vault(Method::Get, &format!("pki/cert/{serial}"), None);
    assert!(
        cert["data"]["revocation_time"].as_i64().unwrap_or(0) > 0,
        "{cert}\n{lease_id:?}"
    );
}

/// The serial of a PEM certificate as OpenBao names it (`aa:bb:...`).
fn cert_serial(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn an_error_stops_only_that_entry_and_keeps_what_was_delivered() {
    let f = Fixture::new(false);
    let (role, pki, entries) = f.both("er");
    let s = stack();
    let out = run(SYNCHRONIZER, f.files_env(&entries, &[]));
    assert!(out.status.success(), "{}", stderr(&out));
    let (user, cert) = (f.text("db", "username"), f.read("tls", "tls.crt").unwrap());
    // The PKI role is gone: the certificate cannot be issued again, and the
    // credentials entry goes on.
    s.vault(Method::Delete, &format!("pki/roles/{pki}"), None);
    let out = run(SYNCHRONIZER, f.files_env(&entries, &[]));
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("entry \"cert:pki/issue/{pki}")),
        "{log}"
    );
    assert_eq!(
        f.read("tls", "tls.crt").unwrap(),
        cert,
        "the certificate was changed"
    );
    assert_ne!(
        f.text("db", "username"),
        user,
        "the other entry was not served"
    );
    // The database is down for that role too: nothing deleted either.
    s.vault(Method::Delete, &format!("database/roles/{role}"), None);
    let now_user = f.text("db", "username");
    let out = run(SYNCHRONIZER, f.files_env(&entries, &[]));
    assert!(!out.status.success());
    assert_eq!(f.text("db", "username"), now_user);
    assert_eq!(f.read("tls", "tls.crt").unwrap(), cert);
}

#[test]
fn bad_entries_are_refused_at_start_naming_the_entry() {
    let f = Fixture::new(true);
    for (secrets, files, want) in [
        (
            "creds:database/creds/app:db",
            false,
            "credentials are written to files only",
        ),
        ("cert:pki/issue/app?ttl=1h", true, "needs common_name"),
        (
            "cert:pki/issue/app?common_name=a.vk.test&ttl=soon",
            true,
            "ttl",
        ),
    ] {
        let env = if files {
            f.files_env(secrets, &[])
        } else {
            f.secrets_env(secrets, &[])
        };
        let out = run(SYNCHRONIZER, env);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(log.contains("configuration error: VAULT_SECRETS"), "{log}");
        assert!(log.contains(want) && log.contains(secrets), "{log}");
    }
    // As an init container only: a warning at start.
    let out = run(
        SYNCHRONIZER,
        f.files_env("creds:database/creds/app:db", &[]),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("no SYNC_INTERVAL, so nothing renews or replaces it"),
        "{log}"
    );
}

//! vault-kubernetes-authenticator against the real stack.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use vault_kubernetes::http::Method;

fn token_of(pod: &Pod) -> String {
    std::fs::read_to_string(pod.token_path()).unwrap()
}

#[test]
fn kubernetes_login_writes_a_valid_0640_token() {
    let pod = Pod::new(RoleOptions::default());
    let out = run(AUTHENTICATOR, pod.env());
    let log = assert_ok(&out);
    assert!(log.contains("successfully authenticated to vault"), "{log}");
    assert!(
        log.contains(&format!(
            "successfully stored vault token at {}",
            pod.token_path().display()
        )),
        "{log}"
    );
    assert_eq!(mode(&pod.token_path()), 0o640);
    let token = token_of(&pod);
    assert!(!token.ends_with('\n') && !token.is_empty());
    let info = stack().lookup(&token).expect("token is valid");
    assert_eq!(
        info["meta"]["service_account_namespace"],
        pod.namespace.as_str()
    );
    // Never a token or a JWT in the logs.
    let jwt = std::fs::read_to_string(pod.dir.join("sa/token")).unwrap();
    assert!(!log.contains(&token) && !log.contains(jwt.trim()));
    // Only our file in the directory: no temporary left behind.
    assert_eq!(
        std::fs::read_dir(pod.dir.join("tokens")).unwrap().count(),
        1
    );
}

#[test]
fn custom_mount_in_both_spellings() {
    let pod = Pod::new(RoleOptions {
        mount: "k8s",
        ..Default::default()
    });
    for spelling in ["k8s", "auth/k8s/", "/k8s"] {
        let _ = std::fs::remove_file(pod.token_path());
        let out = pod.run(AUTHENTICATOR, &[("VAULT_AUTH_MOUNT_PATH", spelling)]);
        assert!(out.status.success(), "{spelling}: {}", stderr(&out));
        assert!(stack().lookup(&token_of(&pod)).is_some());
    }
    // The role exists only at k8s: the default mount refuses it.
    let out = run(AUTHENTICATOR, pod.env());
    assert!(!out.status.success());
}

#[test]
fn approle_login_uses_the_approle_mount() {
    let pod = Pod::new(RoleOptions::default());
    let (role_id, secret_id) = stack().approle(None, &["vk-demo"], json!({}));
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ROLE", ""),
            ("VAULT_ROLE_ID", &role_id),
            ("VAULT_SECRET_ID", &secret_id),
        ],
    );
    let out = run(AUTHENTICATOR, env);
    let log = assert_ok(&out);
    let info = stack().lookup(&token_of(&pod)).unwrap();
    assert_eq!(info["path"], "auth/approle/login");
    assert!(!log.contains(&secret_id));
}

#[test]
fn unknown_role_fails_fast_with_vaults_message() {
    let pod = Pod::new(RoleOptions::default());
    let start = Instant::now();
    let out = pod.run(AUTHENTICATOR, &[("VAULT_ROLE", "no-such-role")]);
    let log = assert_fails(&out);
    assert!(
        log.contains("authentication failed: ") && log.contains("invalid role name"),
        "{log}"
    );
    // The line names the variables that chose the role and the mount.
    assert!(
        log.contains(r#"VAULT_ROLE "no-such-role", VAULT_AUTH_MOUNT_PATH "kubernetes""#),
        "{log}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "no retries on 400"
    );
    assert!(!pod.token_path().exists());
}

#[test]
fn unbound_service_account_gets_403() {
    let pod = Pod::new(RoleOptions::default());
    stack().kube(
        Method::Post,
        &format!("/api/v1/namespaces/{}/serviceaccounts", pod.namespace),
        Some(json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"intruder"}})),
    );
    std::fs::write(
        pod.dir.join("sa/token"),
        mint_jwt(&pod.namespace, "intruder", None),
    )
    .unwrap();
    let out = run(AUTHENTICATOR, pod.env());
    let log = assert_fails(&out);
    assert!(log.contains("HTTP 403"), "{log}");
}

#[test]
fn missing_service_account_token_names_its_variable() {
    // Outside a pod, or with automountServiceAccountToken: false and no
    // projected volume: the line says which variable to set, and which file.
    let pod = Pod::new(RoleOptions::default());
    let missing = pod.dir.join("sa/no-such-token");
    let out = pod.run(
        AUTHENTICATOR,
        &[("SERVICE_ACCOUNT_TOKEN_PATH", missing.to_str().unwrap())],
    );
    let log = assert_fails(&out);
    assert!(
        log.contains(&format!(
            "authentication failed: SERVICE_ACCOUNT_TOKEN_PATH: read service account token {}",
            missing.display()
        )),
        "{log}"
    );
    // A mount that does not exist: Vault says only "permission denied".
    let out = pod.run(AUTHENTICATOR, &[("VAULT_AUTH_MOUNT_PATH", "no-such-mount")]);
    let log = assert_fails(&out);
    assert!(
        log.contains("HTTP 403") && log.contains(r#"VAULT_AUTH_MOUNT_PATH "no-such-mount""#),
        "{log}"
    );
}

#[test]
fn vault_that_comes_up_late_costs_no_crash() {
    let pod = Pod::new(RoleOptions::default());
    let addr = late_listener(stack().get("VAULT_ADDR"), Duration::from_secs(3));
    let out = pod.run(
        AUTHENTICATOR,
        &[("VAULT_ADDR", &addr), ("LOGIN_TIMEOUT", "30s")],
    );
    let log = assert_ok(&out);
    assert!(log.contains("retrying in"), "each retry is logged: {log}");
    assert!(stack().lookup(&token_of(&pod)).is_some());
}

#[test]
fn vault_that_never_comes_gives_up_after_login_timeout() {
    let pod = Pod::new(RoleOptions::default());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let out = pod.run(
        AUTHENTICATOR,
        &[
            ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
            ("LOGIN_TIMEOUT", "3s"),
        ],
    );
    let took = start.elapsed();
    let log = assert_fails(&out);
    // Gives up when no full try (250 ms) fits before LOGIN_TIMEOUT.
    assert!(
        took >= Duration::from_millis(2600) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let last = log.lines().last().unwrap();
    assert!(
        last.contains("authentication failed: ") && last.contains("onnection refused"),
        "{last}"
    );
    // The address, and the variable it came from.
    assert!(
        last.contains(&format!(
            "http://127.0.0.1:{port}/v1/auth/kubernetes/login (VAULT_ADDR): "
        )),
        "{last}"
    );
}

#[test]
fn allow_fail_removes_a_stale_token_and_exits_0() {
    let pod = Pod::new(RoleOptions::default());
    std::fs::write(pod.token_path(), "s.stale").unwrap();
    let out = pod.run(
        AUTHENTICATOR,
        &[("VAULT_ROLE", "no-such-role"), ("ALLOW_FAIL", "true")],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("authentication failed - ALLOW_FAIL is set therefore pod will continue: "),
        "{log}"
    );
    assert!(!pod.token_path().exists());
}

#[test]
fn token_file_mode_and_owner_are_configurable() {
    let pod = Pod::new(RoleOptions::default());
    let out = pod.run(
        AUTHENTICATOR,
        &[
            ("VAULT_TOKEN_FILE_MODE", "0640"),
            ("VAULT_TOKEN_FILE_OWNER", "65534:65534"),
        ],
    );
    assert_ok(&out);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(pod.token_path()).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o640, 65534, 65534)
    );
}

#[test]
fn unusable_token_places_stop_before_any_login() {
    // An AppRole mount of this test's own, so OpenBao's audit log shows
    // every login this test causes and none of the parallel tests'.
    let s = stack();
    let mount = unique("ar-pre");
    s.vault(
        Method::Post,
        &format!("sys/auth/{mount}"),
        Some(json!({"type": "approle"})),
    );
    s.vault(
        Method::Post,
        &format!("auth/{mount}/role/r"),
        Some(json!({"token_policies": ["default"], "token_ttl": "1h"})),
    );
    let role_id = s.vault(Method::Get, &format!("auth/{mount}/role/r/role-id"), None)["data"]
        ["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = s.vault(
        Method::Post,
        &format!("auth/{mount}/role/r/secret-id"),
        None,
    )["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = std::env::temp_dir().join(unique("vk-pre"));
    std::fs::create_dir_all(dir.join("isdir")).unwrap();
    std::fs::write(dir.join("file"), "").unwrap();
    let env = |path: &std::path::Path| {
        vec![
            ("VAULT_ADDR".to_string(), s.get("VAULT_ADDR").to_string()),
            ("VAULT_AUTH_MOUNT_PATH".into(), mount.clone()),
            ("VAULT_ROLE_ID".into(), role_id.clone()),
            ("VAULT_SECRET_ID".into(), secret_id.clone()),
            ("VAULT_TOKEN_PATH".into(), path.display().to_string()),
        ]
    };
    let login_path = format!("auth/{mount}/login");
    let cases = [
        (dir.join("missing/token"), "does not exist"),
        (dir.join("file/token"), "is not a directory"),
        (dir.join("isdir"), "is a directory"),
    ];
    let ((), logins) = vault_audit(&login_path, || {
        for (path, message) in &cases {
            let out = run(AUTHENTICATOR, env(path));
            let log = assert_fails(&out);
            assert!(log.contains(message), "{message}: {log}");
            assert!(log.contains(&path.display().to_string()), "{log}");
        }
        // A directory this user cannot write to (root's, 0755), as user 47011.
        use std::os::unix::process::CommandExt;
        let path = dir.join("token");
        let out = command(AUTHENTICATOR, env(&path))
            .uid(47011)
            .gid(47011)
            .output()
            .unwrap();
        let log = assert_fails(&out);
        assert!(
            log.contains(&format!(
                "token directory {} is not writable",
                dir.display()
            )),
            "{log}"
        );
    });
    assert!(logins.is_empty(), "{} logins", logins.len());
    // The same set-up with a usable path logs in once: the audit sees it.
    let ((), logins) = vault_audit(&login_path, || {
        assert_ok(&run(AUTHENTICATOR, env(&dir.join("token"))));
    });
    assert_eq!(logins.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readers_never_see_a_partial_token_file() {
    use vault_kubernetes::config::{Secret, TokenFileSettings};
    let dir = std::env::temp_dir().join(unique("atomic"));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = TokenFileSettings {
        path: dir.join("token"),
        mode: 0o600,
        uid: None,
        gid: None,
    };
    let a = "s.".to_string() + &"a".repeat(90);
    let b = "s.".to_string() + &"b".repeat(90);
    vault_kubernetes::token_file::write(&settings, &Secret::new(a.clone())).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop, a, b) = (settings.path.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = std::fs::read_to_string(&path).unwrap();
                assert!(got == a || got == b, "partial read: {got:?}");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..100 {
        let t = if i % 2 == 0 { &b } else { &a };
        vault_kubernetes::token_file::write(&settings, &Secret::new(t.clone())).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn tls_with_ca_without_ca_and_skip_verify() {
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let tls = with(&pod.env(), &[("VAULT_ADDR", s.get("VK_VAULT_TLS_ADDR"))]);

    let out = run(
        AUTHENTICATOR,
        with(&tls, &[("VAULT_CACERT", s.get("VK_CA_CERT"))]),
    );
    assert_ok(&out);

    let pem = std::fs::read_to_string(s.get("VK_CA_CERT")).unwrap();
    let out = run(AUTHENTICATOR, with(&tls, &[("VAULT_CACERT_BYTES", &pem)]));
    assert_ok(&out);

    let ca_dir = pod.dir.join("cas");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(s.get("VK_CA_CERT"), ca_dir.join("ca.pem")).unwrap();
    let out = run(
        AUTHENTICATOR,
        with(&tls, &[("VAULT_CAPATH", &ca_dir.display().to_string())]),
    );
    assert_ok(&out);

    let start = Instant::now();
    let out = run(AUTHENTICATOR, tls.clone());
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        log.contains("certificate") && log.contains("UnknownIssuer"),
        "{log}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "certificate errors are not retried"
    );

    let out = run(AUTHENTICATOR, with(&tls, &[("VAULT_SKIP_VERIFY", "true")]));
    let log = assert_ok(&out);
    assert!(log.contains("WARNING: VAULT_SKIP_VERIFY is set"), "{log}");

    // The server certificate names vault.test, not the address we dial.
    let port = s.get("VK_VAULT_TLS_ADDR").rsplit(':').next().unwrap();
    let by_name = with(
        &tls,
        &[
            ("VAULT_ADDR", &format!("https://localhost:{port}")),
            ("VAULT_CACERT", s.get("VK_CA_CERT")),
        ],
    );
    let out = run(
        AUTHENTICATOR,
        with(&by_name, &[("VAULT_TLS_SERVER_NAME", "vault.test")]),
    );
    assert_ok(&out);
    let out = run(
        AUTHENTICATOR,
        with(&by_name, &[("VAULT_TLS_SERVER_NAME", "other.test")]),
    );
    assert_eq!(out.status.code(), Some(1), "wrong name must fail");
}

#[test]
fn mtls_needs_the_client_certificate() {
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ADDR", s.get("VK_VAULT_MTLS_ADDR")),
            ("VAULT_CACERT", s.get("VK_CA_CERT")),
            ("LOGIN_TIMEOUT", "2s"),
        ],
    );
    let out = run(AUTHENTICATOR, env.clone());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(
        AUTHENTICATOR,
        with(
            &env,
            &[
                ("VAULT_CLIENT_CERT", s.get("VK_CLIENT_CERT")),
                ("VAULT_CLIENT_KEY", s.get("VK_CLIENT_KEY")),
            ],
        ),
    );
    assert_ok(&out);
    assert!(s.lookup(&token_of(&pod)).is_some());
}

#[test]
fn namespace_login() {
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let ns = unique("ns");
    s.vault(
        Method::Post,
        &format!("sys/namespaces/{ns}"),
        Some(json!({})),
    );
    s.vault_in(
        &ns,
        Method::Post,
        "sys/auth/approle",
        Some(json!({"type": "approle"})),
    );
    let (role_id, secret_id) = s.approle(Some(&ns), &["default"], json!({}));
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ROLE", ""),
            ("VAULT_ROLE_ID", &role_id),
            ("VAULT_SECRET_ID", &secret_id),
        ],
    );
    let out = run(AUTHENTICATOR, env.clone());
    assert_eq!(
        out.status.code(),
        Some(1),
        "the role exists only in the namespace"
    );
    let out = run(AUTHENTICATOR, with(&env, &[("VAULT_NAMESPACE", &ns)]));
    assert_ok(&out);
    let info = s.vault_in(
        &ns,
        Method::Post,
        "auth/token/lookup",
        Some(json!({"token": token_of(&pod)})),
    );
    assert_eq!(info["data"]["path"], "auth/approle/login");
}

#[test]
fn every_bad_variable_is_named() {
    let pod = Pod::new(RoleOptions::default());
    let cases: &[(&str, &str)] = &[
        ("VAULT_ADDR", "ftp://x"),
        ("VAULT_SKIP_VERIFY", "yes"),
        ("VAULT_CLIENT_TIMEOUT", "soon"),
        ("VAULT_MAX_RETRIES", "-1"),
        ("VAULT_HEADERS", "{\"X-Vault-Token\":\"x\"}"),
        ("VAULT_HEADERS", "not json"),
        ("VAULT_CLIENT_CERT", "/tmp/cert.pem"),
        ("VAULT_AUTH_MOUNT_PATH", "auth/"),
        ("LOGIN_TIMEOUT", "-5s"),
        ("ALLOW_FAIL", "maybe"),
        ("VAULT_TOKEN_FILE_MODE", "rw"),
        ("VAULT_TOKEN_FILE_OWNER", "root"),
        ("LOG_FORMAT", "xml"),
        ("VAULT_ROLE", ""),
        ("VAULT_TOKEN_PATH", ""),
        ("VAULT_ROLE_ID", "only-role-id"),
    ];
    for (var, value) in cases {
        let start = Instant::now();
        let out = pod.run(AUTHENTICATOR, &[(var, value)]);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {log}");
        // Missing pair partners are named too: VAULT_CLIENT_KEY, VAULT_SECRET_ID.
        let named = log.contains(var)
            || log.contains("VAULT_CLIENT_KEY")
            || log.contains("VAULT_SECRET_ID");
        assert!(named && log.lines().count() == 1, "{var}={value}: {log}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{var}: before any network call"
        );
    }
    // A secret value is never echoed.
    let out = pod.run(AUTHENTICATOR, &[("VAULT_SECRET_ID", "hunter2")]);
    assert!(!stderr(&out).contains("hunter2"));
}

#[test]
fn json_logs_and_help_and_version() {
    let pod = Pod::new(RoleOptions::default());
    let out = pod.run(AUTHENTICATOR, &[("LOG_FORMAT", "json")]);
    assert!(out.status.success());
    for line in stderr(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["time"].is_string() && v["level"].is_string() && v["msg"].is_string());
    }
    let out = std::process::Command::new(AUTHENTICATOR)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "VAULT_ADDR",
        "VAULT_CACERT_BYTES",
        "VAULT_ROLE",
        "VAULT_TOKEN_PATH",
        "ALLOW_FAIL",
        "LOGIN_TIMEOUT",
        "SERVICE_ACCOUNT_TOKEN_PATH",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
    let out = std::process::Command::new(AUTHENTICATOR)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("vault-kubernetes-authenticator 0."));
}

#[test]
fn proxies_are_used_unless_no_proxy_matches() {
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let port = s.get("VAULT_ADDR").rsplit(':').next().unwrap().to_string();
    let (proxy, seen) = connect_proxy(s.get("VAULT_ADDR"));
    // A name only the proxy can reach: success proves the tunnel was used.
    let hidden = format!("http://vault.invalid:{port}");
    for var in ["VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR", "HTTP_PROXY"] {
        let out = pod.run(AUTHENTICATOR, &[("VAULT_ADDR", &hidden), (var, &proxy)]);
        assert_ok(&out);
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(seen.lock().unwrap()[0].starts_with(&format!("CONNECT vault.invalid:{port}")));
    // NO_PROXY matching the Vault host: straight to Vault, the proxy sees nothing.
    let out = pod.run(
        AUTHENTICATOR,
        &[("HTTP_PROXY", &proxy), ("NO_PROXY", "localhost,127.0.0.1")],
    );
    assert_ok(&out);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

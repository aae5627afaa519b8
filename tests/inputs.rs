//! Odd and bad inputs against the real stack, one test per kind of failure
//! of issue #12: no panic on huge numbers, blank means unset, invalid
//! addresses refused at start, odd bytes in credential files, Go's parsing
//! where the Go images were lenient, API limits checked in the plan, and no
//! secret or forged line in logs.

mod support;

use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use support::*;

/// The renewer for `secs`, then SIGTERM; its output.
fn renewer_for(secs: u64, env: Vec<(String, String)>) -> Output {
    let child = spawn(RENEWER, env);
    std::thread::sleep(Duration::from_secs(secs));
    sigterm(&child);
    child.wait_with_output().unwrap()
}

/// Exit 1 (not a panic's 134) with one line naming `var`.
fn refused(out: &Output, var: &str) {
    let log = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{var}: {log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains(&format!("{var}: ")), "{var}: {log}");
}

#[test]
fn huge_numbers_are_refused_never_a_panic() {
    let pod = Pod::new(RoleOptions::default());
    let max = "18446744073709551615";
    let out = pod.run(AUTHENTICATOR, &[("LOGIN_TIMEOUT", max)]);
    refused(&out, "LOGIN_TIMEOUT");
    for bin in [RENEWER, SYNCHRONIZER] {
        let env = with(
            &pod.env(),
            &[
                ("VAULT_CLIENT_TIMEOUT", "9223372036854775808"),
                ("VAULT_SECRETS", "secret/x"),
            ],
        );
        refused(&run(bin, env), "VAULT_CLIENT_TIMEOUT");
    }
    // Go's largest duration is fine, as plain seconds and with units.
    let out = pod.run(AUTHENTICATOR, &[("LOGIN_TIMEOUT", "9223372036")]);
    assert_ok(&out);
}

#[test]
fn blank_values_count_as_unset() {
    let pod = Pod::new(RoleOptions::default());
    refused(
        &pod.run(AUTHENTICATOR, &[("VAULT_ROLE", "   ")]),
        "VAULT_ROLE",
    );
    refused(
        &pod.run(AUTHENTICATOR, &[("VAULT_TOKEN_PATH", " \t ")]),
        "VAULT_TOKEN_PATH",
    );
    let env = with(
        &pod.env(),
        &[
            ("KUBERNETES_SERVICE_HOST", "  "),
            ("VAULT_SECRETS", "secret/x"),
        ],
    );
    refused(&run(SYNCHRONIZER, env), "KUBERNETES_SERVICE_HOST");
    // A blank optional value takes its default instead of failing.
    let out = pod.run(AUTHENTICATOR, &[("VAULT_NAMESPACE", "  ")]);
    assert_ok(&out);
}

#[test]
fn invalid_addresses_are_refused_at_start() {
    let pod = Pod::new(RoleOptions::default());
    for addr in [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:8200?query#fragment",
        "http://[::1:80",
    ] {
        let out = pod.run(AUTHENTICATOR, &[("VAULT_ADDR", addr)]);
        refused(&out, "VAULT_ADDR");
    }
    for host in ["kube rnetes", "{kubernetes}"] {
        let env = with(
            &pod.env(),
            &[
                ("KUBERNETES_SERVICE_HOST", host),
                ("VAULT_SECRETS", "secret/x"),
            ],
        );
        refused(&run(SYNCHRONIZER, env), "KUBERNETES_SERVICE_HOST");
    }
    // Above what Vault takes as an increment: refused at start, named.
    let out = pod.run(RENEWER, &[("VAULT_TTL", "2562047h47m17s")]);
    refused(&out, "VAULT_TTL");
}

#[test]
fn vault_ttl_at_its_maximum_renews() {
    // A 3 s token is renewed after about 2 s, asking for Go's largest
    // duration; OpenBao caps it at the max TTL with a warning.
    let pod = Pod::new(RoleOptions::ttl("3s", "1h"));
    pod.login();
    let out = renewer_for(
        4,
        with(
            &pod.env(),
            &[("VAULT_TTL", "2562047h47m16s"), ("VAULT_REAUTH", "true")],
        ),
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("start renewer loop"), "{log}");
    assert!(log.contains("token renewed"), "{log}");
    assert!(!log.contains("increment"), "{log}");
    // Every renewal comes back "capped": at most the one login that
    // replaces the capped token, not a login after login.
    let logins = log.matches("successfully authenticated").count();
    assert!(logins <= 2, "{logins} logins in 4 s: {log}");
}

/// Forwards `[::1]:<port>` to `target` (`host:port`): an IPv6 address for
/// a server that listens on IPv4 loopback only.
fn ipv6_forwarder(target: String) -> u16 {
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Ok(up) = TcpStream::connect(&target) {
                splice(conn, up);
            }
        }
    });
    port
}

#[test]
fn tls_server_name_with_an_ipv6_vault_addr() {
    let s = stack();
    let pod = Pod::new(RoleOptions::default());
    let target = s.get("VK_VAULT_TLS_ADDR").trim_start_matches("https://");
    let port = ipv6_forwarder(target.to_string());
    let addr = format!("https://[::1]:{port}");
    // The certificate names vault.test, not ::1: only the server name makes it verify.
    let out = pod.run(
        AUTHENTICATOR,
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_CACERT", s.get("VK_CA_CERT")),
            ("VAULT_TLS_SERVER_NAME", "vault.test"),
        ],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("successfully authenticated to vault"));
}

#[test]
fn credential_files_with_a_bom_work_and_odd_bytes_are_named() {
    let pod = Pod::new(RoleOptions::default());
    let jwt_path = pod.dir.join("sa/token");
    let jwt = std::fs::read(&jwt_path).unwrap();
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(&jwt);
    with_bom.extend_from_slice(b"\r\n");
    std::fs::write(&jwt_path, &with_bom).unwrap();
    pod.login();
    // The Vault token file written by someone else's editor, for the renewer.
    let token = std::fs::read(pod.token_path()).unwrap();
    let mut token_bom = b"\xEF\xBB\xBF".to_vec();
    token_bom.extend_from_slice(&token);
    std::fs::write(pod.token_path(), &token_bom).unwrap();
    let out = renewer_for(1, pod.env());
    assert!(
        stderr(&out).contains("start renewer loop"),
        "{}",
        stderr(&out)
    );

    // A NUL in the middle of the JWT: named by position, never shown.
    let mut broken = jwt.clone();
    broken[20] = 0;
    std::fs::write(&jwt_path, &broken).unwrap();
    let out = run(AUTHENTICATOR, pod.env());
    let log = assert_fails(&out);
    assert!(
        log.contains(&format!("service account token {}", jwt_path.display()))
            && log.contains("byte 21 is a control character"),
        "{log}"
    );
    assert!(
        !log.contains(&String::from_utf8_lossy(&jwt[..20]).to_string()),
        "{log}"
    );
}

#[test]
fn base64_wrapped_at_76_columns_decodes_like_go() {
    let pod = Pod::new(RoleOptions::default());
    pod.login();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    let encoded = vault_kubernetes::base64::encode(&bytes);
    let wrapped: Vec<String> = encoded
        .as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    // A folder of its own: tests that synchronize the demo folder
    // secret/k8s/ expect exactly its secrets.
    let path = format!("k8s/{}/wrapped", unique("b64"));
    stack().kv_put(
        "secret",
        &path,
        json!({ "blob": format!("base64:{}\n", wrapped.join("\n")) }),
    );
    let name = path.rsplit('/').next().unwrap();
    let out = pod.run(
        SYNCHRONIZER,
        &[("VAULT_SECRETS", &format!("secret/{path}"))],
    );
    assert_ok(&out);
    let secret = pod.secret(name).expect("secret written");
    assert_eq!(secret["data"]["blob"], encoded);
}

#[test]
fn a_refusing_proxy_is_named_without_its_password() {
    let pod = Pod::new(RoleOptions::default());
    record_secret("hunter2-proxy");
    // A port nothing listens on: the proxy refuses the connection.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = format!("http://user:hunter2-proxy@{closed}");
    let out = pod.run(
        AUTHENTICATOR,
        &[
            ("VAULT_ADDR", "http://vault.invalid:8200"),
            ("HTTP_PROXY", &proxy),
            ("LOGIN_TIMEOUT", "1s"),
        ],
    );
    let log = assert_fails(&out);
    assert!(
        log.contains(&format!("(through proxy http://user:xxxxx@{closed})")),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
    // A malformed proxy address: the configuration error hides it too.
    let out = pod.run(
        AUTHENTICATOR,
        &[
            ("HTTP_PROXY", "user:hunter2-proxy@proxy:99999"),
            ("VAULT_ADDR", "http://vault.invalid:8200"),
        ],
    );
    refused(&out, "HTTP_PROXY");
    assert!(!stderr(&out).contains("hunter2"));
}

#[test]
fn vault_addr_passwords_never_reach_a_log_line() {
    let pod = Pod::new(RoleOptions::default());
    record_secret("hunter2-vault");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = pod.run(
        AUTHENTICATOR,
        &[
            (
                "VAULT_ADDR",
                &format!("http://admin:hunter2-vault@{closed}"),
            ),
            ("LOGIN_TIMEOUT", "2s"),
        ],
    );
    let log = assert_fails(&out);
    assert!(log.contains("retrying in"), "retries were logged: {log}");
    assert!(log.contains(&format!("admin:xxxxx@{closed}")), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}

#[test]
fn multi_line_server_messages_stay_on_one_line() {
    let s = stack();
    let pod = Pod::new(RoleOptions::default());
    // A secret outside the pod's policy: OpenBao answers 403 with
    // "1 error occurred:\n\t* permission denied\n\n".
    pod.login();
    let path = format!("demo/{}", unique("outside"));
    s.kv_put("secret", &path, json!({"k": "v"}));
    let out = pod.run(
        SYNCHRONIZER,
        &[("VAULT_SECRETS", &format!("secret/{path}"))],
    );
    let log = assert_fails(&out);
    assert!(log.contains("\\n\\t* permission denied"), "{log}");
    for line in log.lines() {
        assert!(
            line.len() > 20 && line.as_bytes()[4] == b'/' && line.as_bytes()[19] == b' ',
            "not one event per line: {line:?}"
        );
    }
}

#[test]
fn secret_size_is_checked_as_kubernetes_counts_it_before_any_write() {
    let pod = Pod::new(RoleOptions::default());
    pod.login();
    let base = format!("k8s/{}", unique("size"));
    let filler = |n: usize| "0123456789abcdef".repeat(n / 16 + 1)[..n].to_string();
    // Exactly 1 MiB of values over two keys: the API server takes it.
    let limit = 1024 * 1024;
    stack().kv_put(
        "secret",
        &format!("{base}/at-limit"),
        json!({"a": filler(limit - 10), "b": filler(10)}),
    );
    stack().kv_put(
        "secret",
        &format!("{base}/small"),
        json!({"k": "small-value"}),
    );
    let out = pod.run(
        SYNCHRONIZER,
        &[(
            "VAULT_SECRETS",
            &format!("secret/{base}/at-limit,secret/{base}/small"),
        )],
    );
    assert_ok(&out);
    let data = &pod.secret("at-limit").unwrap()["data"];
    let decoded = |k: &str| vault_kubernetes::base64::decode(data[k].as_str().unwrap()).unwrap();
    assert_eq!(decoded("a").len() + decoded("b").len(), limit);

    // One byte more, listed after a new small secret: refused in the plan,
    // so not even the small one is created.
    let other = Pod::new(RoleOptions::default());
    other.login();
    stack().kv_put(
        "secret",
        &format!("{base}/over"),
        json!({"a": filler(limit - 10), "b": filler(11)}),
    );
    let out = other.run(
        SYNCHRONIZER,
        &[(
            "VAULT_SECRETS",
            &format!("secret/{base}/small,secret/{base}/over"),
        )],
    );
    let log = assert_fails(&out);
    assert!(
        log.contains("values total 1048577 bytes, more than the 1048576 bytes"),
        "{log}"
    );
    assert!(
        other.secret_names().is_empty(),
        "{:?}",
        other.secret_names()
    );
}

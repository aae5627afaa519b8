//! vault-kubernetes-token-renewer against the real stack, with short TTLs.

mod support;

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use vault_kubernetes::config::{Secret, TokenFileSettings};
use vault_kubernetes::http::Method;

/// The renewer in `pod`, its environment changed by `extra`.
fn renewer(pod: &Pod, extra: &[(&str, &str)]) -> Child {
    spawn(RENEWER, with(&pod.env(), extra))
}

fn stop(child: Child) -> Output {
    sigterm(&child);
    child.wait_with_output().unwrap()
}

fn ttl_of(token: &str) -> Option<u64> {
    stack().lookup(token).map(|d| d["ttl"].as_u64().unwrap())
}

#[test]
fn renews_with_the_requested_increment() {
    let pod = Pod::new(RoleOptions::ttl("4s", "60s"));
    let token = pod.login();
    let child = renewer(&pod, &[("VAULT_TTL", "10s")]);
    // The first renewal comes at about 2/3 of 4s; with VAULT_TTL the TTL
    // goes above the role's 4s.
    assert!(
        wait_until(Duration::from_secs(8), || ttl_of(&token)
            .is_some_and(|t| t > 5)),
        "ttl never extended past 4s"
    );
    // And again on later renewals (the Go tool dropped VAULT_TTL after the first).
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        ttl_of(&token).is_some_and(|t| t > 3),
        "still renewed with the increment"
    );
    let out = stop(child);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("start renewer loop")
            && log.matches("token renewed\n").count() >= 2
            && log.contains("token ttl 10s"),
        "{log}"
    );
    assert!(log.contains("signal received - stop execution"));
    assert!(!log.contains(&token), "token never logged");
}

#[test]
fn max_ttl_with_reauth_replaces_the_token_and_keeps_running() {
    let pod = Pod::new(RoleOptions::ttl("3s", "6s"));
    let first = pod.login();
    let mut child = renewer(&pod, &[("VAULT_REAUTH", "true")]);
    let path = pod.token_path();
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&path)
            .is_ok_and(|t| t != first)),
        "token never replaced"
    );
    let second = std::fs::read_to_string(&path).unwrap();
    assert!(ttl_of(&second).is_some(), "the new token is valid");
    assert_eq!(mode(&path), 0o640);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let log = stderr(&stop(child));
    assert!(
        log.contains("re-authenticating: the token reached its max TTL"),
        "{log}"
    );
}

#[test]
fn max_ttl_without_reauth_exits_1_before_expiry() {
    let pod = Pod::new(RoleOptions::ttl("4s", "10s"));
    let token = pod.login();
    let start = Instant::now();
    let child = renewer(&pod, &[]);
    let out = child.wait_with_output().unwrap();
    let log = assert_fails(&out);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "exited before expiry: {:?}\n{log}",
        start.elapsed()
    );
    assert!(ttl_of(&token).is_some(), "token still valid when we exit");
    let last = log.lines().last().unwrap();
    assert!(
        last.contains("max TTL")
            && last.contains("expires in")
            && last.contains("VAULT_REAUTH is not set"),
        "{last}"
    );
}

#[test]
fn revoked_token_means_reauth_or_exit_1() {
    let pod = Pod::new(RoleOptions::ttl("3s", "60s"));
    let token = pod.login();
    let child = renewer(&pod, &[]);
    std::thread::sleep(Duration::from_millis(500));
    stack().vault(
        Method::Post,
        "auth/token/revoke",
        Some(json!({"token": token})),
    );
    let out = child.wait_with_output().unwrap();
    let log = assert_fails(&out);
    assert!(
        log.contains("403") && log.contains("VAULT_REAUTH is not set"),
        "{log}"
    );

    let token = pod.login();
    let child = renewer(&pod, &[("VAULT_REAUTH", "true")]);
    std::thread::sleep(Duration::from_millis(500));
    stack().vault(
        Method::Post,
        "auth/token/revoke",
        Some(json!({"token": token})),
    );
    let path = pod.token_path();
    assert!(wait_until(Duration::from_secs(6), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t != token && ttl_of(&t).is_some())
    }));
    let log = stderr(&stop(child));
    assert!(log.contains("re-authenticating"), "{log}");
}

#[test]
fn a_token_written_by_another_process_is_renewed_at_once() {
    let pod = Pod::new(RoleOptions::ttl("1h", "24h"));
    pod.login();
    let child = renewer(&pod, &[]);
    std::thread::sleep(Duration::from_millis(500));
    // Another writer, atomically (temporary file and rename).
    let (role_id, secret_id) = stack().approle(None, &["default"], json!({"token_ttl": "1h"}));
    let other = std::process::Command::new(AUTHENTICATOR)
        .env_clear()
        .envs(with(
            &pod.env(),
            &[
                ("VAULT_ROLE", ""),
                ("VAULT_ROLE_ID", &role_id),
                ("VAULT_SECRET_ID", &secret_id),
            ],
        ))
        .output()
        .unwrap();
    assert!(other.status.success());
    let new = std::fs::read_to_string(pod.token_path()).unwrap();
    assert!(
        wait_until(Duration::from_secs(1), || stack()
            .lookup(&new)
            .is_some_and(|d| d["last_renewal_time"].is_number())),
        "new token not renewed within a second"
    );
    let log = stderr(&stop(child));
    assert!(log.contains("token file changed"), "{log}");
}

#[test]
fn non_renewable_batch_token_is_replaced_before_expiry() {
    let pod = Pod::new(RoleOptions {
        ttl: "4s",
        max_ttl: "4s",
        extra: json!({"token_type": "batch"}),
        ..Default::default()
    });
    let first = pod.login();
    assert_eq!(stack().lookup(&first).unwrap()["renewable"], false);
    let child = renewer(&pod, &[("VAULT_REAUTH", "true")]);
    let path = pod.token_path();
    let replaced = wait_until(Duration::from_secs(4), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t != first)
    });
    let still_valid = ttl_of(&first).is_some();
    let log = stderr(&stop(child));
    assert!(replaced, "{log}");
    assert!(still_valid, "replaced before the old one expired");
    assert!(log.contains("not renewable"), "{log}");
}

#[test]
fn vault_outage_is_retried_then_recovers() {
    let pod = Pod::new(RoleOptions::ttl("12s", "60s"));
    let token = pod.login();
    let gate = Gate::new(stack().get("VAULT_ADDR"));
    let mut child = renewer(
        &pod,
        &[("VAULT_ADDR", &gate.addr), ("VAULT_CLIENT_TIMEOUT", "1s")],
    );
    // The first renewal is due 8.0-8.8s in: make Vault unreachable from 7s to 10s.
    std::thread::sleep(Duration::from_secs(7));
    gate.close();
    std::thread::sleep(Duration::from_secs(3));
    gate.reopen();
    let renewed = wait_until(Duration::from_secs(3), || {
        ttl_of(&token).is_some_and(|t| t > 8)
    });
    let running = child.try_wait().unwrap().is_none();
    let log = stderr(&stop(child));
    assert!(renewed && running, "not renewed after the outage: {log}");
    assert!(log.contains("failed to renew token, retrying"), "{log}");
}

#[test]
fn sigterm_mid_sleep_exits_0_fast_and_can_revoke() {
    let pod = Pod::new(RoleOptions::ttl("1h", "24h"));
    let token = pod.login();
    let child = renewer(&pod, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let out = stop(child);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(out.status.code(), Some(0));
    assert!(ttl_of(&token).is_some(), "not revoked by default");

    let child = renewer(&pod, &[("VAULT_REVOKE_ON_SHUTDOWN", "true")]);
    std::thread::sleep(Duration::from_millis(500));
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0));
    assert!(ttl_of(&token).is_none(), "revoked on shutdown");
}

#[test]
fn missing_token_needs_reauth() {
    let pod = Pod::new(RoleOptions::ttl("1h", "24h"));
    let out = run(RENEWER, pod.env());
    let log = assert_fails(&out);
    assert!(
        log.contains("no token in") && log.contains("VAULT_REAUTH"),
        "{log}"
    );
    let child = renewer(&pod, &[("VAULT_REAUTH", "true")]);
    let path = pod.token_path();
    assert!(wait_until(Duration::from_secs(5), || {
        vault_kubernetes::token_file::read(&path).unwrap().is_some()
    }));
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(ttl_of(&token).is_some());
    stop(child);
    // Unused settings type kept honest: the file we read is the one configured.
    let _ = TokenFileSettings {
        path,
        mode: 0o600,
        uid: None,
        gid: None,
    };
    let _ = Secret::new("");
}

#[test]
fn sigterm_during_login_backoff_exits_0_fast() {
    let pod = Pod::new(RoleOptions::ttl("1h", "24h"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // No token and no Vault: the renewer keeps retrying its login.
    let child = renewer(
        &pod,
        &[
            ("VAULT_REAUTH", "true"),
            ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
            ("LOGIN_TIMEOUT", "60s"),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let start = Instant::now();
    let out = stop(child);
    let log = stderr(&out);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("retrying in") && log.ends_with("signal received - stop execution\n"),
        "{log}"
    );
}

//! Drop-in compatibility with the Go images (postfinance/vault-kubernetes
//! v0.4.2): each test runs one input the Go images accept, against the real
//! stack, and asserts our outcome and log lines against what the Go images
//! were measured to do side by side on the same stack (quoted in each test).

mod support;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// The message of each text log line (Go's `YYYY/MM/DD HH:MM:SS ` removed).
fn messages(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .map(|l| l.get(20..).unwrap_or(l).to_string())
        .collect()
}

/// A pod whose Vault role reads `secret/<base>/*` (KV v2) and
/// `kv1/<base>/*` (KV v1), with a token from the authenticator.
fn pod_with_kv() -> (Pod, String) {
    let (pod, base) = pod_with_policy("go", kv_rules, &[]);
    pod.login();
    (pod, base)
}

fn sync(pod: &Pod, changes: &[(&str, &str)]) -> Output {
    pod.run(SYNCHRONIZER, changes)
}

fn ok(out: &Output) -> Vec<String> {
    assert_ok(out);
    messages(out)
}

#[test]
fn synchronizer_labels_of_the_go_readme() {
    // Go: exit 0, labels k1=v1, k2=v2, k3=""; the entry without `=` is ignored.
    let (pod, base) = pod_with_kv();
    stack().kv_put("secret", &format!("{base}/first"), json!({"v": "1"}));
    let secrets = format!("secret/{base}/first");
    let log = ok(&sync(
        &pod,
        &[
            ("VAULT_SECRETS", &secrets),
            ("SYNCHRONIZER_LABELS", "k1=v1,k2=v2,k3=,k4"),
        ],
    ));
    let secret = pod.secret("first").expect("secret first");
    let labels = &secret["metadata"]["labels"];
    assert_eq!(
        [&labels["k1"], &labels["k2"], &labels["k3"]],
        [&json!("v1"), &json!("v2"), &json!("")],
        "{labels}"
    );
    assert!(labels.get("k4").is_none(), "{labels}");
    assert!(
        log.contains(
            &"WARNING: SYNCHRONIZER_LABELS: ignoring \"k4\": not key=value (the Go images ignored it too)".into()
        ),
        "{log:?}"
    );
}

#[test]
fn two_entries_for_one_secret_the_later_wins() {
    // Go: `secret/k8s/first,kv1/k8s/first` exits 0 and the later entry's
    // data ends up in the Secret.
    let (pod, base) = pod_with_kv();
    stack().kv_put("secret", &format!("{base}/first"), json!({"from": "kv2"}));
    stack().kv1_put("kv1", &format!("{base}/first"), json!({"from": "kv1"}));
    let secrets = format!("secret/{base}/first,kv1/{base}/first");
    let log = ok(&sync(&pod, &[("VAULT_SECRETS", &secrets)]));
    let secret = pod.secret("first").expect("secret first");
    assert_eq!(secret["data"]["from"], "a3Yx"); // base64 of "kv1"
    assert_eq!(
        secret["metadata"]["annotations"]["vault-secret"],
        format!("kv1/{base}/first")
    );
    let warning = format!(
        "WARNING: VAULT_SECRETS: secret/{base}/first and kv1/{base}/first both give secret first: the later (kv1/{base}/first) is used, as in the Go images"
    );
    assert!(log.contains(&warning), "{log:?}");
}

#[test]
fn synchronizer_first_line_names_the_annotation() {
    // Go: every run logs `Using annotation [ vault-secret ] to detect managed secrets` first.
    let (pod, base) = pod_with_kv();
    stack().kv_put("secret", &format!("{base}/first"), json!({"v": "1"}));
    let secrets = format!("secret/{base}/first");
    let log = ok(&sync(&pod, &[("VAULT_SECRETS", &secrets)]));
    assert_eq!(
        log[0],
        "Using annotation [ vault-secret ] to detect managed secrets"
    );
    assert!(log.contains(&"secrets successfully synchronized".into()));
}

#[test]
fn allow_fail_line_is_go_text_without_prefix() {
    // Go: `authentication failed - ALLOW_FAIL is set therefore pod will continue: <error>`, exit 0.
    let pod = Pod::new(RoleOptions::default());
    let env = with(
        &pod.env(),
        &[("VAULT_ROLE", "no-such-role"), ("ALLOW_FAIL", "true")],
    );
    let out = run(AUTHENTICATOR, env.clone());
    let log = ok(&out);
    let line = log
        .iter()
        .find(|l| l.contains("ALLOW_FAIL"))
        .expect("ALLOW_FAIL line");
    assert!(
        line.starts_with("authentication failed - ALLOW_FAIL is set therefore pod will continue: "),
        "{line}"
    );
    // With LOG_FORMAT=json the same text is the message, at level warning.
    let out = run(AUTHENTICATOR, with(&env, &[("LOG_FORMAT", "json")]));
    assert_ok(&out);
    let line: Value = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["msg"].as_str().unwrap().contains("ALLOW_FAIL"))
        .unwrap();
    assert_eq!(line["level"], "warning");
    assert!(line["msg"]
        .as_str()
        .unwrap()
        .starts_with("authentication failed - ALLOW_FAIL is set therefore pod will continue: "));
}

#[test]
fn renewer_renews_once_at_start_and_logs_token_renewed() {
    // Go: renews once immediately at start and logs exactly `token renewed`.
    let pod = Pod::new(RoleOptions::ttl("1h", "24h"));
    let token = pod.login();
    let child = spawn(RENEWER, with(&pod.env(), &[("VAULT_TTL", "2h")]));
    // The renewal with VAULT_TTL=2h lifts the TTL above the role's 1h at
    // once; the schedule alone would wait about 40 minutes.
    let renewed = wait_until(Duration::from_secs(10), || {
        stack()
            .lookup(&token)
            .is_some_and(|d| d["ttl"].as_u64().unwrap() > 3600)
    });
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    record_log(&out);
    let log = stderr(&out);
    assert!(renewed, "no renewal at start: {log}");
    assert!(out.status.success(), "{log}");
    let lines: Vec<&str> = log.lines().map(|l| l.get(20..).unwrap_or(l)).collect();
    let renewed_at = lines.iter().position(|l| *l == "token renewed");
    let loop_at = lines.iter().position(|l| *l == "start renewer loop");
    assert!(
        renewed_at.is_some() && renewed_at < loop_at,
        "`token renewed` before `start renewer loop`: {log}"
    );
    assert!(lines.contains(&"token ttl 7200s"), "{log}");
}

#[test]
fn vault_agent_addr_overrides_vault_addr() {
    // Go's Vault client: VAULT_AGENT_ADDR, when set, replaces VAULT_ADDR.
    let pod = Pod::new(RoleOptions::default());
    let out = pod.run(
        AUTHENTICATOR,
        &[
            ("VAULT_ADDR", "http://127.0.0.1:1"),
            ("VAULT_AGENT_ADDR", stack().get("VAULT_ADDR")),
        ],
    );
    assert!(ok(&out).contains(&"successfully authenticated to vault".into()));
    assert!(pod.token_path().exists());
}

/// `bao proxy` forwarding to the stack's OpenBao, listening on a unix
/// socket in `dir`; killed on drop.
struct BaoProxy {
    child: Child,
    socket: String,
}

impl BaoProxy {
    fn start(dir: &Path) -> BaoProxy {
        let socket = dir.join("proxy.sock");
        let config = dir.join("proxy.hcl");
        std::fs::write(
            &config,
            format!(
                "vault {{\n  address = \"{}\"\n}}\n\
                 listener \"unix\" {{\n  address = \"{}\"\n  tls_disable = true\n}}\n\
                 api_proxy {{\n  use_auto_auth_token = false\n}}\n",
                stack().get("VAULT_ADDR"),
                socket.display()
            ),
        )
        .unwrap();
        let bao = Path::new(stack().get("VK_BIN")).join("bao");
        let log = std::fs::File::create(dir.join("proxy.log")).unwrap();
        let child = std::process::Command::new(bao)
            .args(["proxy", "-config"])
            .arg(&config)
            .env_clear()
            // bao looks for its token helper under HOME.
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proxy = BaoProxy {
            child,
            socket: format!("unix://{}", socket.display()),
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        if !up {
            let _ = proxy.child.kill();
            panic!(
                "bao proxy did not listen: {}",
                std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
            );
        }
        proxy
    }
}

impl Drop for BaoProxy {
    fn drop(&mut self) {
        sigterm(&self.child);
        let _ = self.child.wait();
    }
}

#[test]
fn unix_socket_address_of_a_bao_proxy() {
    // Go's Vault client: `unix://` addresses reach an Agent or Proxy listener socket.
    let (pod, base) = pod_with_kv();
    stack().kv_put("secret", &format!("{base}/first"), json!({"v": "1"}));
    let proxy = BaoProxy::start(&pod.dir);
    // VAULT_ADDR points nowhere: only the socket can answer.
    let via_socket = [
        ("VAULT_ADDR", "http://127.0.0.1:1"),
        ("VAULT_AGENT_ADDR", proxy.socket.as_str()),
    ];
    std::fs::remove_file(pod.token_path()).unwrap();
    let log = ok(&pod.run(AUTHENTICATOR, &via_socket));
    assert!(log.contains(&"successfully authenticated to vault".into()));
    let token = std::fs::read_to_string(pod.token_path()).unwrap();
    assert!(stack().lookup(&token).is_some(), "a real OpenBao token");
    let secrets = format!("secret/{base}/first");
    let mut changes = via_socket.to_vec();
    changes.push(("VAULT_SECRETS", &secrets));
    ok(&sync(&pod, &changes));
    assert_eq!(pod.secret("first").unwrap()["data"]["v"], "MQ==");
    // The renewer too: it renews at start through the socket.
    let child = spawn(RENEWER, with(&pod.env(), &via_socket));
    std::thread::sleep(Duration::from_secs(2));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    record_log(&out);
    assert!(
        messages(&out).contains(&"token renewed".into()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rate_limit_spaces_vault_requests() {
    // Go's Vault client: VAULT_RATE_LIMIT=rate[:burst] requests per second.
    let (pod, base) = pod_with_kv();
    for i in 0..4 {
        stack().kv_put("secret", &format!("{base}/dir/s{i}"), json!({"v": "1"}));
    }
    let secrets = format!("secret/{base}/dir/");
    // One mount lookup, one list, four reads: six requests, the first at
    // once, then one every 0.5 s.
    let start = Instant::now();
    ok(&sync(
        &pod,
        &[("VAULT_SECRETS", &secrets), ("VAULT_RATE_LIMIT", "2:1")],
    ));
    let limited = start.elapsed();
    assert_eq!(pod.secret_names().len(), 4);
    assert!(
        limited >= Duration::from_millis(2400),
        "6 requests at 2/s took {limited:?}"
    );
}

/// Answers every request with `status` and `Location: <to><path>`, as a
/// Vault standby points at the active node; counts the requests.
fn redirector(status: u16, to: String) -> (String, std::sync::Arc<std::sync::Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let Some(request) = read_request(&mut reader) else {
                continue;
            };
            *count.lock().unwrap() += 1;
            let path = request.path();
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status} Redirect\r\nLocation: {to}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, seen)
}

#[test]
fn one_redirect_is_followed_with_the_same_method_and_body() {
    // Go's Vault client: one 301/302/307 is followed with the same request;
    // VAULT_DISABLE_REDIRECTS=true turns it off.
    let pod = Pod::new(RoleOptions::default());
    let (addr, seen) = redirector(307, stack().get("VAULT_ADDR").to_string());
    let log = ok(&pod.run(AUTHENTICATOR, &[("VAULT_ADDR", &addr)]));
    assert!(log.contains(&"successfully authenticated to vault".into()));
    assert_eq!(*seen.lock().unwrap(), 1);

    std::fs::remove_file(pod.token_path()).unwrap();
    let out = pod.run(
        AUTHENTICATOR,
        &[("VAULT_ADDR", &addr), ("VAULT_DISABLE_REDIRECTS", "true")],
    );
    assert_eq!(out.status.code(), Some(1));
    let last = messages(&out).pop().unwrap();
    assert!(
        last.starts_with("authentication failed: ") && last.contains("not followed"),
        "{last}"
    );
    assert!(!pod.token_path().exists());

    // A second redirect is not followed (Go: only one).
    let (second, _) = redirector(307, stack().get("VAULT_ADDR").to_string());
    let (first, _) = redirector(302, second);
    let out = pod.run(AUTHENTICATOR, &[("VAULT_ADDR", &first)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_redirect_never_logs_the_password_of_vault_addr() {
    // A relative Location keeps VAULT_ADDR's user:password; the messages
    // that name the redirect target must hide it, as every other address.
    let pod = Pod::new(RoleOptions::default());
    let (addr, seen) = redirector(307, String::new());
    let addr = addr.replace("http://", "http://vk:hunter2@");
    let out = pod.run(
        AUTHENTICATOR,
        &[("VAULT_ADDR", &addr), ("LOGIN_TIMEOUT", "1s")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(*seen.lock().unwrap() >= 2, "the redirect was followed");
    let err = stderr(&out);
    assert!(err.contains("redirected to http://vk:"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn vault_client_variables_we_do_not_implement_stop_the_start() {
    // Go's Vault client read these; we refuse them by name before any request.
    let pod = Pod::new(RoleOptions::default());
    for (var, value) in [
        ("VAULT_SRV_LOOKUP", "true"),
        ("VAULT_WRAP_TTL", "5m"),
        ("VAULT_MFA", "totp:123456"),
    ] {
        let out = pod.run(AUTHENTICATOR, &[(var, value)]);
        assert_eq!(out.status.code(), Some(1));
        let log = messages(&out);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(
            log[0].starts_with(&format!("configuration error: {var}: not supported: ")),
            "{log:?}"
        );
        assert!(!log[0].contains(value));
    }
    // VAULT_TOKEN is read but the token file wins, as in the Go tools: one line says so.
    let log = ok(&pod.run(AUTHENTICATOR, &[("VAULT_TOKEN", "s.unused")]));
    assert!(log.contains(
        &"WARNING: VAULT_TOKEN is set but not used: the token always comes from VAULT_TOKEN_PATH"
            .into()
    ));
    assert!(!log.iter().any(|l| l.contains("s.unused")), "never logged");
}

#[test]
fn missing_token_and_a_folder_never_synced_exits_1() {
    // Go: a warning and exit 0 (it could not check folders), so the pod
    // started without those Secrets. Listed in the README as changed: we
    // exit 1 naming the folder.
    let (pod, base) = pod_with_kv();
    std::fs::remove_file(pod.token_path()).unwrap();
    let secrets = format!("secret/{base}/dir/");
    let out = sync(&pod, &[("VAULT_SECRETS", &secrets)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let last = messages(&out).pop().unwrap();
    assert!(
        last.contains(&format!("secret/{base}/dir/ (no secret from this folder)")),
        "{last}"
    );
}

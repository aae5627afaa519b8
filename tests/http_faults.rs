//! Faults the real servers cannot produce on demand, from an in-process
//! HTTP server: 5xx and 429 answers in a row, `Retry-After`, 501, stalled
//! sockets, huge answers, empty or malformed tokens, and the three
//! programs' behaviour under them (signals, deadlines, pacing, memory).
//! The real-server side of the same behaviour (a Vault that is down, then
//! up; signals while idle; revoked tokens) is in tests/authenticator.rs,
//! tests/renewer.rs and tests/synchronizer.rs.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{command, read_request, stack, wait_until, AUTHENTICATOR, RENEWER, SYNCHRONIZER};
use vault_kubernetes::config::TlsSettings;
use vault_kubernetes::http::{HttpClient, Method, Request, Retry};

/// Serves the given answers in order, one per request (the last repeats);
/// `None` holds the connection open without answering.
fn server(answers: Vec<Option<(u16, &'static str)>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if read_request(&mut reader).is_none() {
                    return;
                }
                let Some((status, extra)) = answer else {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                };
                let body = r#"{"errors":["injected"]}"#;
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (addr, calls)
}

fn client(addr: &str, timeout: Duration) -> HttpClient {
    HttpClient::new(addr, &TlsSettings::default(), None, timeout, vec![]).unwrap()
}

#[test]
fn server_errors_are_retried_until_success() {
    let (addr, calls) = server(vec![Some((500, "")), Some((503, "")), Some((200, ""))]);
    let resp = client(&addr, Duration::from_secs(5))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn retries_stop_at_the_limit_with_the_servers_message() {
    let (addr, calls) = server(vec![Some((502, ""))]);
    let err = client(&addr, Duration::from_secs(5))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(err.status(), Some(502));
    assert!(err.to_string().ends_with("HTTP 502: injected"), "{err}");
}

#[test]
fn not_implemented_and_client_errors_are_not_retried() {
    for status in [501, 400, 403, 404] {
        let (addr, calls) = server(vec![Some((status, ""))]);
        let err = client(&addr, Duration::from_secs(5))
            .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
            .unwrap_err();
        assert_eq!(err.status(), Some(status));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{status}");
    }
}

#[test]
fn retry_after_is_honoured() {
    let (addr, calls) = server(vec![Some((429, "Retry-After: 2\r\n")), Some((200, ""))]);
    let start = Instant::now();
    client(&addr, Duration::from_secs(5))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A `Retry-After` of 30 years (a hostile or broken proxy) must not put a
/// request without deadline (a synchronizer read) to sleep for that long:
/// the wait is capped at the client timeout.
#[test]
fn a_huge_retry_after_is_capped_at_the_client_timeout() {
    let (addr, calls) = server(vec![
        Some((503, "Retry-After: 999999999\r\n")),
        Some((200, "")),
    ]);
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let result = client(&addr, Duration::from_secs(1))
            .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(1));
        let _ = tx.send(result.map(|r| r.status).map_err(|e| e.to_string()));
    });
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("slept for the server's Retry-After of 30 years");
    assert_eq!(status, Ok(200));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_stalled_server_times_out_and_is_retried() {
    let (addr, calls) = server(vec![None, Some((200, ""))]);
    let start = Instant::now();
    let resp = client(&addr, Duration::from_millis(500))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(1))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// A Vault Agent socket whose listener never accepts and whose queue is
/// full: a blocking connect(2) would wait for ever, past every deadline,
/// and each retry would leave one more thread stuck in it.
#[test]
fn a_unix_socket_that_never_accepts_times_out() {
    use nix::errno::Errno;
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let dir = Dir::new("backlog");
    let path = dir.0.join("agent.sock");
    let addr = UnixAddr::new(&path).unwrap();
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    use std::os::fd::AsRawFd;
    bind(listener.as_raw_fd(), &addr).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // Fill the accept queue (bounded: backlog 0 holds one or two).
    let mut queued = Vec::new();
    for _ in 0..64 {
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(s.as_raw_fd(), &addr) {
            Ok(()) => queued.push(s),
            Err(Errno::EAGAIN) => break,
            Err(e) => panic!("fill the queue: {e}"),
        }
    }
    let sock = format!("unix://{}", path.display());
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let result = client(&sock, Duration::from_millis(500)).send(
            &Request::new(Method::Get, "/v1/sys/health"),
            Retry::Times(1),
        );
        let _ = tx.send(result.map(|r| r.status));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a connect to a full socket queue ignored the 500 ms timeout");
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(queued);
}

#[test]
fn a_deadline_bounds_retries() {
    let (addr, _) = server(vec![Some((503, ""))]);
    let start = Instant::now();
    let err = client(&addr, Duration::from_secs(5))
        .send(
            &Request::new(Method::Get, "/v1/x"),
            Retry::Until(Instant::now() + Duration::from_secs(2)),
        )
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.status(), Some(503));
    assert!(
        took >= Duration::from_millis(1600) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

// ---------------------------------------------------------------------------
// A fake Vault driven by a closure, for the programs themselves.

/// What the fake Vault does with one request.
#[derive(Clone)]
enum Answer {
    /// Status and JSON body.
    Json(u16, String),
    /// Holds the connection open without a byte of answer.
    Stall,
    /// A 200 whose body is a login/KV answer of this many bytes, with or
    /// without `Content-Length`.
    Huge { bytes: usize, announce: bool },
}

/// One request the fake Vault saw: when, method and path, `X-Vault-Token`.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    path: String,
    token: String,
}

struct Fake {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn new(handler: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve(conn, &log, &*handler));
            }
        });
        Fake { addr, seen }
    }

    /// Waits (5 s at most) for a request whose path starts with `prefix`,
    /// then 200 ms more, so the program is inside that request.
    fn wait_for(&self, prefix: &str) {
        assert!(
            wait_until(Duration::from_secs(5), || !self.calls(prefix).is_empty()),
            "no request to {prefix}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Requests whose path starts with `prefix`.
    fn calls(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn serve(
    conn: std::net::TcpStream,
    log: &Mutex<Vec<Seen>>,
    handler: &(dyn Fn(&str, &str) -> Answer + Send + Sync),
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    let path = request.path().to_string();
    let token = request
        .header("x-vault-token")
        .unwrap_or_default()
        .to_string();
    log.lock().unwrap().push(Seen {
        at: Instant::now(),
        path: path.clone(),
        token: token.clone(),
    });
    let mut conn = conn;
    match handler(&path, &token) {
        Answer::Stall => {
            // Until the client gives up (or the test process ends).
            let mut buf = [0u8; 1];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
            let _ = conn.read(&mut buf);
        }
        Answer::Json(status, body) => {
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Answer::Huge { bytes, announce } => {
            let head = r#"{"data":{"data":{"k":""#;
            let auth = r#"{"auth":{"lease_duration":3600,"renewable":true,"client_token":""#;
            let head = if path.contains("/login") { auth } else { head };
            let tail = r#""}}}"#;
            let fill = bytes - head.len() - tail.len();
            let length = if announce {
                format!("Content-Length: {bytes}\r\n")
            } else {
                String::new()
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n{head}"
            );
            let chunk = vec![b'a'; 64 * 1024];
            let mut left = fill;
            while left > 0 {
                let n = left.min(chunk.len());
                if conn.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n;
            }
            let _ = conn.write_all(tail.as_bytes());
        }
    }
}

fn ok(body: serde_json::Value) -> Answer {
    Answer::Json(200, body.to_string())
}

fn lookup(ttl: u64) -> Answer {
    ok(serde_json::json!({"data": {"ttl": ttl, "creation_ttl": ttl, "renewable": true}}))
}

fn auth(token: &str, lease: u64) -> Answer {
    ok(
        serde_json::json!({"auth": {"client_token": token, "lease_duration": lease, "renewable": true}}),
    )
}

fn denied() -> Answer {
    Answer::Json(403, r#"{"errors":["permission denied"]}"#.into())
}

/// A pod-like directory: `token` holding `s.good`, a JWT for logins.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(support::unique(&format!("vk-fault-{tag}")));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("token"), "s.good").unwrap();
        std::fs::write(d.join("jwt"), "eyJhbGciOiJSUzI1NiJ9.e30.sig").unwrap();
        Dir(d)
    }

    fn token(&self) -> PathBuf {
        self.0.join("token")
    }

    fn token_text(&self) -> String {
        std::fs::read_to_string(self.token()).unwrap()
    }

    /// A program's environment against `fake`, with `extra` added.
    fn env(&self, fake: &Fake, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("VAULT_ADDR".into(), fake.addr.clone()),
            (
                "VAULT_TOKEN_PATH".into(),
                self.token().display().to_string(),
            ),
            ("VAULT_ROLE".into(), "r".into()),
            (
                "SERVICE_ACCOUNT_TOKEN_PATH".into(),
                self.0.join("jwt").display().to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// The synchronizer's environment: [`Dir::env`] and the real API
    /// server of the stack, namespace `vk-demo`.
    fn sync_env(&self, fake: &Fake, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let s = stack();
        let mut env = self.env(fake, extra);
        env.push(("POD_NAMESPACE".into(), "vk-demo".into()));
        for k in [
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "KUBERNETES_SERVICEACCOUNT_DIR",
        ] {
            env.push((k.into(), s.get(k).into()));
        }
        env
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(bin: &str, env: Vec<(String, String)>) -> Child {
    command(bin, env).stderr(Stdio::piped()).spawn().unwrap()
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
}

/// SIGTERM, then the time to exit and the output.
fn term_and_time(child: Child) -> (Duration, Output) {
    let start = Instant::now();
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    (start.elapsed(), out)
}

/// The program's log, also kept for `tests/log_scan.rs`.
fn log_of(out: &Output) -> String {
    support::record_log(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sigterm_ends_the_renewer_during_a_stalled_renewal() {
    // A handed-over token is renewed at once; that renewal stalls, with
    // the full 60 s VAULT_CLIENT_TIMEOUT and an hour of TTL before it.
    let fake = Fake::new(|path, _| match path {
        "/v1/auth/token/lookup-self" => lookup(3600),
        _ => Answer::Stall,
    });
    let dir = Dir::new("renew-stall");
    let child = spawn(RENEWER, dir.env(&fake, &[]));
    fake.wait_for("/v1/auth/token/lookup-self");
    std::fs::write(dir.0.join(".new"), "s.other").unwrap();
    std::fs::rename(dir.0.join(".new"), dir.token()).unwrap();
    fake.wait_for("/v1/auth/token/renew-self");
    std::thread::sleep(Duration::from_millis(300));
    let (took, out) = term_and_time(child);
    let log = log_of(&out);
    eprintln!("renewer exit after SIGTERM during a stalled renewal: {took:?}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(log.ends_with("signal received - stop execution\n"), "{log}");
}

#[test]
fn a_stalled_revoke_on_shutdown_is_bounded() {
    let fake = Fake::new(|path, _| match path {
        "/v1/auth/token/lookup-self" => lookup(3600),
        "/v1/auth/token/renew-self" => auth("s.good", 3600),
        _ => Answer::Stall,
    });
    let dir = Dir::new("revoke-stall");
    let child = spawn(
        RENEWER,
        dir.env(&fake, &[("VAULT_REVOKE_ON_SHUTDOWN", "true")]),
    );
    fake.wait_for("/v1/auth/token/renew-self");
    let (took, out) = term_and_time(child);
    let log = log_of(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(fake.calls("/v1/auth/token/revoke-self").len(), 1, "{log}");
    assert!(log.contains("failed to revoke token"), "{log}");
    assert!(
        took < Duration::from_secs(4),
        "revoke bounded by 2 s: {took:?}"
    );
}

#[test]
fn sigterm_at_start_up_is_not_an_invalid_token() {
    // With VAULT_REAUTH, a signal during the first lookup used to be taken
    // for "token not valid": a login and a new token file, then exit 0.
    let fake = Fake::new(|path, _| match path {
        "/v1/auth/token/lookup-self" => Answer::Stall,
        _ => auth("s.new", 3600),
    });
    let dir = Dir::new("start-stall");
    let child = spawn(RENEWER, dir.env(&fake, &[("VAULT_REAUTH", "true")]));
    fake.wait_for("/v1/auth/token/lookup-self");
    let (took, out) = term_and_time(child);
    let log = log_of(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(fake.calls("/v1/auth/kubernetes/login").is_empty(), "{log}");
    assert_eq!(dir.token_text(), "s.good");
    assert!(!log.contains("re-authenticating"), "{log}");
}

#[test]
fn sigterm_ends_the_synchronizer_during_a_stalled_read() {
    let fake = Fake::new(|_, _| Answer::Stall);
    let dir = Dir::new("sync-stall");
    let env = dir.sync_env(
        &fake,
        &[
            ("VAULT_SECRETS", "secret/k8s/first"),
            ("SYNC_INTERVAL", "1h"),
        ],
    );
    let child = spawn(SYNCHRONIZER, env);
    fake.wait_for("/v1/");
    let (took, out) = term_and_time(child);
    let log = log_of(&out);
    eprintln!("synchronizer exit after SIGTERM during a stalled read: {took:?}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(log.contains("signal received - stop execution"), "{log}");
    assert!(!log.contains("synchronization failed"), "{log}");
}

#[test]
fn sigterm_ends_the_authenticator_during_a_stalled_login() {
    let fake = Fake::new(|_, _| Answer::Stall);
    let dir = Dir::new("auth-stall");
    let child = spawn(AUTHENTICATOR, dir.env(&fake, &[]));
    fake.wait_for("/v1/auth/kubernetes/login");
    let (took, out) = term_and_time(child);
    eprintln!("authenticator exit after SIGTERM during a stalled login: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(log_of(&out).contains("signal received"), "{}", log_of(&out));
    assert_eq!(dir.token_text(), "s.good", "nothing written after a signal");
}

#[test]
fn a_25s_stall_on_a_30s_token_is_survived() {
    // Vault stalls every request from 1 s to 26 s after start; the token
    // expires at 30 s. The renewal due at about 21 s must not wait the
    // 60 s VAULT_CLIENT_TIMEOUT but end, retry, and renew after the stall.
    let start = Instant::now();
    let fake = Fake::new(move |path, _| {
        let t = start.elapsed();
        if t > Duration::from_secs(1) && t < Duration::from_secs(26) {
            return Answer::Stall;
        }
        match path {
            "/v1/auth/token/lookup-self" => lookup(30),
            _ => auth("s.good", 30),
        }
    });
    let dir = Dir::new("stall-25");
    let mut child = spawn(RENEWER, dir.env(&fake, &[]));
    std::thread::sleep(Duration::from_secs(33));
    let running = child.try_wait().unwrap().is_none();
    let (_, out) = term_and_time(child);
    let log = log_of(&out);
    let renewed: Vec<Duration> = fake
        .calls("/v1/auth/token/renew-self")
        .iter()
        .map(|c| c.at - start)
        .collect();
    eprintln!("renewal tries at {renewed:?}\n{log}");
    assert!(running, "{log}");
    assert!(
        log.contains("token renewed\n") && log.contains("token ttl 30s"),
        "{log}"
    );
    assert!(
        renewed
            .iter()
            .any(|t| *t >= Duration::from_secs(26) && *t < Duration::from_secs(30)),
        "renewed after the stall, before expiry: {renewed:?}"
    );
}

#[test]
fn bad_login_answers_are_never_written() {
    let huge = 52 * 1024 * 1024;
    let cases: Vec<(Answer, &str, std::ops::RangeInclusive<usize>)> = vec![
        // Never retried: Vault minted a token for each of these answers.
        (auth("", 3600), "invalid answer: empty token", 1..=1),
        (
            auth("s.abc\n", 3600),
            "invalid answer: token with a whitespace",
            1..=1,
        ),
        (
            auth("s.abc", 0),
            "invalid answer: lease_duration of 0s",
            1..=1,
        ),
        (
            Answer::Json(200, "{}".into()),
            "response without auth block",
            1..=1,
        ),
        (
            Answer::Huge {
                bytes: huge,
                announce: true,
            },
            "answer of 54525952 bytes is over the limit of 65536 bytes, not retried",
            1..=1,
        ),
        (
            Answer::Huge {
                bytes: huge,
                announce: false,
            },
            "answer over the limit of 65536 bytes, not retried",
            1..=1,
        ),
    ];
    for (answer, message, logins) in cases {
        let fake = Fake::new(move |_, _| answer.clone());
        let dir = Dir::new("bad-login");
        let out = command(AUTHENTICATOR, dir.env(&fake, &[("LOGIN_TIMEOUT", "3s")]))
            .output()
            .unwrap();
        let log = log_of(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(log.contains(message), "{message}: {log}");
        let n = fake.calls("/v1/auth/kubernetes/login").len();
        assert!(logins.contains(&n), "{message}: {n} logins");
        assert_eq!(dir.token_text(), "s.good", "{message}");
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            2,
            "no temp file left"
        );
    }
}

#[test]
fn logins_are_paced_against_a_vault_that_keeps_answering_badly() {
    // Every token Vault gives is refused at its first renewal: without
    // pacing the renewer would log in about twice a second.
    let fake = Fake::new(|path, _| match path {
        "/v1/auth/token/lookup-self" => lookup(1),
        "/v1/auth/token/renew-self" => denied(),
        _ => auth("s.new", 1),
    });
    let dir = Dir::new("pace");
    let child = spawn(RENEWER, dir.env(&fake, &[("VAULT_REAUTH", "true")]));
    std::thread::sleep(Duration::from_secs(20));
    let (_, out) = term_and_time(child);
    let log = log_of(&out);
    let logins = fake.calls("/v1/auth/kubernetes/login").len();
    let renewals = fake.calls("/v1/auth/token/renew-self").len();
    eprintln!(
        "logins in 20 s against a Vault refusing every renewal: {logins} ({renewals} renewals)"
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!((3..=10).contains(&logins), "{logins} logins in 20 s\n{log}");
    // Each login waits the backoff of the failures before it, from the
    // previous login: the gaps grow (250 ms doubling, ±25%, to 8 s).
    let at: Vec<Instant> = fake
        .calls("/v1/auth/kubernetes/login")
        .iter()
        .map(|c| c.at)
        .collect();
    for (i, pair) in at.windows(2).enumerate() {
        let floor = Duration::from_millis(180) * 2u32.pow(i.min(5) as u32);
        assert!(
            pair[1] - pair[0] >= floor.min(Duration::from_secs(6)),
            "login {} came {:?} after the one before",
            i + 2,
            pair[1] - pair[0]
        );
    }
}

#[test]
fn renewer_with_an_empty_login_answer_keeps_the_file_and_gives_up() {
    // The Go-era failure: an empty token written, seen as "file removed",
    // 75 logins in 4 s. Now: one login (a malformed answer is never
    // retried: Vault may have minted a token for it), file kept, exit 1.
    let fake = Fake::new(|path, _| match path {
        "/v1/auth/token/lookup-self" => denied(),
        _ => auth("", 3600),
    });
    let dir = Dir::new("empty");
    let out = command(
        RENEWER,
        dir.env(&fake, &[("VAULT_REAUTH", "true"), ("LOGIN_TIMEOUT", "6s")]),
    )
    .output()
    .unwrap();
    let log = log_of(&out);
    let logins = fake.calls("/v1/auth/kubernetes/login").len();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(logins, 1, "{log}");
    assert!(log.contains("empty token"), "{log}");
    assert_eq!(dir.token_text(), "s.good");
}

#[test]
fn a_huge_kv_answer_is_refused_once_and_nothing_is_written() {
    let fake = Fake::new(|path, _| {
        if path.starts_with("/v1/sys/internal/ui/mounts/") {
            ok(
                serde_json::json!({"data": {"path": "secret/", "type": "kv", "options": {"version": "2"}}}),
            )
        } else {
            Answer::Huge {
                bytes: 50 * 1024 * 1024,
                announce: false,
            }
        }
    });
    let dir = Dir::new("kv-huge");
    let env = dir.sync_env(&fake, &[("VAULT_SECRETS", "secret/k8s/huge")]);
    let out = command(SYNCHRONIZER, env).output().unwrap();
    let log = log_of(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("nothing written")
            && log.contains("answer over the limit of 1572864 bytes, not retried"),
        "{log}"
    );
    assert_eq!(
        fake.calls("/v1/secret/data/k8s/huge").len(),
        1,
        "not retried"
    );
}

#[test]
fn unwritable_token_places_are_found_before_any_login() {
    let fake = Fake::new(|_, _| auth("s.new", 3600));
    let dir = Dir::new("pre");
    std::fs::create_dir(dir.0.join("isdir")).unwrap();
    let cases = [
        (dir.0.join("missing/token"), "does not exist"),
        (dir.0.join("token/token"), "is not a directory"),
        (dir.0.join("isdir"), "is a directory"),
    ];
    for (path, message) in &cases {
        for bin in [AUTHENTICATOR, RENEWER] {
            let env = support::with(
                &dir.env(&fake, &[("VAULT_REAUTH", "true")]),
                &[("VAULT_TOKEN_PATH", &path.display().to_string())],
            );
            let out = command(bin, env).output().unwrap();
            let log = log_of(&out);
            assert_eq!(out.status.code(), Some(1), "{log}");
            assert!(
                log.contains(message)
                    && log.contains(&path.parent().unwrap().display().to_string()),
                "{message}: {log}"
            );
        }
    }
    assert!(fake.seen.lock().unwrap().is_empty(), "no request at all");
}

/// A uid no other test or helper uses: its inotify instances are ours to
/// use up (root's are shared by every process of the machine, never those).
const INOTIFY_UID: u32 = 47011;

/// A process of [`INOTIFY_UID`] holding every inotify instance that uid
/// may have; killed (by its pid) when dropped.
struct InotifyHog(Child);

impl InotifyHog {
    fn start() -> InotifyHog {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("120").uid(INOTIFY_UID).gid(INOTIFY_UID);
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // std drops privileges before this runs; refuse to go on as
                // anyone else, so root's instances are never touched.
                if nix::libc::getuid() != INOTIFY_UID || nix::libc::geteuid() != INOTIFY_UID {
                    return Err(std::io::Error::other("not running as the test uid"));
                }
                // Without IN_CLOEXEC: the instances live on in `sleep`.
                while nix::libc::inotify_init() >= 0 {}
                Ok(())
            });
        }
        InotifyHog(cmd.spawn().expect("start the inotify hog"))
    }
}

impl Drop for InotifyHog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn without_inotify_the_renewer_polls_the_file() {
    use std::os::unix::process::CommandExt;
    let fake = Fake::new(|path, _| match path {
        "/v1/auth/token/lookup-self" => lookup(3600),
        _ => auth("s.good", 3600),
    });
    let dir = Dir::new("no-inotify");
    for p in [dir.0.clone(), dir.token()] {
        std::os::unix::fs::chown(&p, Some(INOTIFY_UID), Some(INOTIFY_UID)).unwrap();
    }
    let hog = InotifyHog::start();
    let child = command(RENEWER, dir.env(&fake, &[]))
        .uid(INOTIFY_UID)
        .gid(INOTIFY_UID)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fake.wait_for("/v1/auth/token/lookup-self");
    // Another writer hands over a token, atomically.
    let tmp = dir.0.join(".handover");
    std::fs::write(&tmp, "s.other").unwrap();
    std::os::unix::fs::chown(&tmp, Some(INOTIFY_UID), Some(INOTIFY_UID)).unwrap();
    std::fs::rename(&tmp, dir.token()).unwrap();
    let seen = wait_until(Duration::from_secs(8), || {
        fake.calls("/v1/auth/token/")
            .iter()
            .any(|c| c.token == "s.other")
    });
    let (took, out) = term_and_time(child);
    drop(hog);
    let log = log_of(&out);
    assert!(seen, "handed-over token never looked up\n{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        log.matches("inotify is not available").count(),
        1,
        "warned once\n{log}"
    );
    assert!(
        log.contains("token file changed - loaded the new token"),
        "{log}"
    );
}

#[test]
fn a_folder_list_answer_without_keys_prunes_nothing() {
    // Vault answers an empty or missing folder with 404; a 200 without
    // `data.keys` (a broken proxy or cache) is not "no secrets left".
    let broken = Arc::new(AtomicUsize::new(0));
    let state = broken.clone();
    let fake = Fake::new(move |path, _| {
        if path.starts_with("/v1/sys/internal/ui/mounts/") {
            ok(
                serde_json::json!({"data": {"path": "secret/", "type": "kv", "options": {"version": "2"}}}),
            )
        } else if path.starts_with("/v1/secret/metadata/k8s/") {
            match state.load(Ordering::SeqCst) {
                0 => ok(serde_json::json!({"data": {"keys": ["a"]}})),
                1 => ok(serde_json::json!({"data": {}})),
                _ => ok(serde_json::json!({})),
            }
        } else if path == "/v1/secret/data/k8s/a" {
            ok(serde_json::json!({"data": {"data": {"v": "1"}}}))
        } else {
            Answer::Json(404, r#"{"errors":[]}"#.into())
        }
    });
    let dir = Dir::new("list-nokeys");
    let target = dir.0.join("files");
    std::fs::create_dir(&target).unwrap();
    let target_env = target.display().to_string();
    let env = || {
        dir.env(
            &fake,
            &[
                ("VAULT_SECRETS", "secret/k8s/"),
                ("SYNCHRONIZER_TARGET_DIR", &target_env),
            ],
        )
    };
    let out = command(SYNCHRONIZER, env()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", log_of(&out));
    assert_eq!(std::fs::read_to_string(target.join("a/v")).unwrap(), "1");
    for answer in [1, 2] {
        broken.store(answer, Ordering::SeqCst);
        let out = command(SYNCHRONIZER, env()).output().unwrap();
        let log = log_of(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(!log.contains("delete directory"), "{log}");
        assert_eq!(std::fs::read_to_string(target.join("a/v")).unwrap(), "1");
    }
}

/// `Retry-After` as an HTTP date (RFC 9110 allows a date or seconds),
/// which proxies and load balancers send: the retry waits until then.
#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", "+3 seconds", "+%a, %d %b %Y %H:%M:%S GMT"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let date = String::from_utf8(out.stdout).unwrap();
    let header: &'static str =
        Box::leak(format!("Retry-After: {}\r\n", date.trim()).into_boxed_str());
    let (addr, calls) = server(vec![Some((503, header)), Some((200, ""))]);
    let start = Instant::now();
    client(&addr, Duration::from_secs(10))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap();
    // Whole seconds: 3 s from a moment up to 1 s before the request.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?} after {header:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

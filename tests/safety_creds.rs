//! Credentials and files as an attacker sharing the pod's volume, a crash
//! or an ill-timed signal would leave them (issue 20, items 5-8), against
//! the real stack. A fault proxy in front of OpenBao makes the stalls, 503s
//! and mangled answers the real server will not make on demand; what
//! reached OpenBao is read from its audit log.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

// ---------------------------------------------------------------------------
// A fault proxy in front of the real OpenBao.

/// What the proxy does with one request.
#[derive(Clone)]
enum Act {
    /// Pass it to OpenBao and its answer back.
    Forward,
    /// Hold the connection open without a byte of answer.
    Stall,
    /// Answer itself with this status and JSON body.
    Reply(u16, &'static str),
    /// Pass it on, then hand back the answer's body rewritten.
    Rewrite(fn(&str) -> String),
    /// Pass it on after this delay.
    Delay(Duration),
}

/// One request the proxy saw, and OpenBao's answer body when forwarded.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    token: String,
    answer: String,
}

type Rule = dyn Fn(&str, &str) -> Act + Send + Sync;

/// One request per connection (it asks OpenBao to close after each), so
/// every request the programs make passes through the rule.
struct Proxy {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// `rule(path, X-Vault-Token)` decides each request's fate.
    fn new(rule: impl Fn(&str, &str) -> Act + Send + Sync + 'static) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let upstream = stack()
            .get("VAULT_ADDR")
            .trim_start_matches("http://")
            .to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, rule): (_, Arc<Rule>) = (seen.clone(), Arc::new(rule));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (log, rule, upstream) = (log.clone(), rule.clone(), upstream.clone());
                std::thread::spawn(move || proxy_one(conn, &upstream, &log, &*rule));
            }
        });
        Proxy { addr, seen }
    }

    fn calls(&self, prefix: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits (10 s at most) for a request whose path starts with `prefix`,
    /// then 300 ms more, so the program is inside it.
    fn wait_for(&self, prefix: &str) {
        assert!(
            wait_until(Duration::from_secs(10), || !self.calls(prefix).is_empty()),
            "no request to {prefix}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn proxy_one(client: TcpStream, upstream: &str, log: &Mutex<Vec<Seen>>, rule: &Rule) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut len, mut token) = (0usize, String::new());
    for line in &head {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("x-vault-token:") {
            token = line["x-vault-token:".len()..].trim().to_string();
        }
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let act = rule(&path, &token);
    let index = {
        let mut seen = log.lock().unwrap();
        seen.push(Seen {
            path: path.clone(),
            token,
            answer: String::new(),
        });
        seen.len() - 1
    };
    let mut client = client;
    let rewrite = match act {
        Act::Stall => {
            // Until the program gives up or exits.
            let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
            let _ = client.read(&mut [0u8; 1]);
            return;
        }
        Act::Reply(status, body) => {
            let _ = write!(
                client,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
        Act::Delay(d) => {
            std::thread::sleep(d);
            None
        }
        Act::Forward => None,
        Act::Rewrite(f) => Some(f),
    };
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let mut request = head[0].clone();
    for line in &head[1..] {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(line);
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&body);
    if up.write_all(&bytes).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let (answer_head, answer_body) = answer.split_at(split);
    let text = String::from_utf8_lossy(answer_body).into_owned();
    log.lock().unwrap()[index].answer = text.clone();
    let out = match rewrite {
        None => answer.clone(),
        Some(f) => {
            let new = f(&text);
            let mut out = String::new();
            for line in String::from_utf8_lossy(answer_head).split("\r\n") {
                if line.is_empty() {
                    continue;
                }
                if !line.to_ascii_lowercase().starts_with("content-length:") {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n{new}", new.len()));
            out.into_bytes()
        }
    };
    let _ = client.write_all(&out);
}

// ---------------------------------------------------------------------------
// Helpers.

/// Logs the pod in with the authenticator; the token.
fn login(pod: &Pod) -> String {
    let out = run(AUTHENTICATOR, pod.env());
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(pod.token_path()).unwrap()
}

/// A second token of the pod, written to `name` beside the token file.
fn login_to(pod: &Pod, name: &str) -> (String, PathBuf) {
    let path = pod.dir.join("tokens").join(name);
    let out = run(
        AUTHENTICATOR,
        with(
            &pod.env(),
            &[("VAULT_TOKEN_PATH", &path.display().to_string())],
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    (std::fs::read_to_string(&path).unwrap(), path)
}

fn spawn(bin: &str, env: Vec<(String, String)>) -> Child {
    command(bin, env).stderr(Stdio::piped()).spawn().unwrap()
}

/// The end of a program the test waited for.
struct End {
    out: Output,
    /// From the signal (or the start of the wait) to the exit.
    took: Duration,
    /// Still running at the bound: killed with SIGKILL.
    killed: bool,
}

impl End {
    fn log(&self) -> String {
        stderr(&self.out)
    }
}

/// Sends `signal` (if any), then waits up to `bound` for the exit; a
/// program still running then is killed (SIGKILL, by its pid), so no test
/// leaves a renewer behind.
fn end_within(mut child: Child, signal: Option<nix::sys::signal::Signal>, bound: Duration) -> End {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    if let Some(sig) = signal {
        nix::sys::signal::kill(pid, sig).unwrap();
    }
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > bound {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    let out = child.wait_with_output().unwrap();
    record_log(&out);
    End { out, took, killed }
}

fn sigterm_within(child: Child, bound: Duration) -> End {
    end_within(child, Some(nix::sys::signal::SIGTERM), bound)
}

/// SIGTERM ends the program as promised: within `bound`, exit 0, saying so.
fn assert_stops(child: Child, bound: Duration) -> String {
    let end = sigterm_within(child, bound);
    let log = end.log();
    assert!(!end.killed, "still running {bound:?} after SIGTERM\n{log}");
    assert_eq!(end.out.status.code(), Some(0), "{log}");
    assert!(log.ends_with("signal received - stop execution\n"), "{log}");
    log
}

/// The log of a program the test ends: [`assert_stops`] (SIGTERM obeyed
/// within 1 s) if it was still running, else what it wrote before it died.
fn stop_if_running(child: Child, running: bool) -> String {
    if running {
        assert_stops(child, Duration::from_secs(1))
    } else {
        end_within(child, None, Duration::ZERO).log()
    }
}

/// Peak resident memory of a running process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resource limits for the child, set between fork and exec.
fn limits(cmd: &mut Command, core_unlimited: bool, address_space: Option<u64>) {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs after fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if core_unlimited {
                let r = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(bytes) = address_space {
                let r = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Puts `what` at `path` in one step (a link or FIFO made beside it, then
/// renamed over it), as a co-container sharing the volume could.
fn swap_in(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_file_name(".hostile");
    let _ = std::fs::remove_file(&tmp);
    make(&tmp);
    std::fs::rename(&tmp, path).unwrap();
}

fn fifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// The token in `path` once it is a regular file holding a token OpenBao
/// knows, other than `old`.
fn wait_new_token(path: &Path, old: &str, limit: Duration) -> Option<String> {
    let mut found = None;
    wait_until(limit, || {
        if !is_regular(path) {
            return false;
        }
        let t = std::fs::read_to_string(path).unwrap_or_default();
        // An empty token would look up the caller's own (root) token.
        if !t.is_empty() && t != old && stack().lookup(&t).is_some() {
            found = Some(t);
        }
        found.is_some()
    });
    found
}

fn renewed(token: &str) -> bool {
    stack()
        .lookup(token)
        .is_some_and(|d| d["last_renewal_time"].is_number())
}

const REVOKE: &str = "auth/token/revoke-self";

/// Whether OpenBao's audit events hold a `revoke-self` made with `token`
/// (the audit log has its HMAC, which `sys/audit-hash` computes): tests in
/// parallel revoke other tokens meanwhile.
fn revoked_in_audit(events: &[Value], token: &str) -> bool {
    let hash = stack().vault(
        vault_kubernetes::http::Method::Post,
        "sys/audit-hash/requests",
        Some(json!({ "input": token })),
    )["data"]["hash"]
        .clone();
    events.iter().any(|e| e["auth"]["client_token"] == hash)
}

// ---------------------------------------------------------------------------
// Item 5: hostile token files.

#[test]
fn a_fifo_as_the_token_file_never_blocks_the_renewer() {
    let pod = Pod::new(RoleOptions::default());
    let first = login(&pod);
    let path = pod.token_path();
    // At start, without VAULT_REAUTH: a clear error naming the file.
    swap_in(&path, fifo);
    let end = end_within(spawn(RENEWER, pod.env()), None, Duration::from_secs(5));
    let log = end.log();
    assert!(!end.killed, "blocked on a FIFO at start\n{log}");
    assert_eq!(end.out.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&path.display().to_string()) && log.contains("not a regular file"),
        "{log}"
    );
    // With VAULT_REAUTH: a new login replaces the FIFO, at start and later.
    let mut child = spawn(RENEWER, with(&pod.env(), &[("VAULT_REAUTH", "true")]));
    let Some(second) = wait_new_token(&path, &first, Duration::from_secs(10)) else {
        let end = end_within(child, None, Duration::ZERO);
        panic!("FIFO at start never replaced\n{}", end.log())
    };
    swap_in(&path, fifo);
    let third = wait_new_token(&path, &second, Duration::from_secs(10));
    let running = child.try_wait().unwrap().is_none();
    let log = assert_stops(child, Duration::from_secs(1));
    assert!(
        third.is_some() && running,
        "FIFO mid-run never replaced\n{log}"
    );
    assert!(log.contains("not a regular file"), "{log}");
}

#[test]
fn a_link_to_dev_zero_as_the_token_file_costs_no_memory() {
    let pod = Pod::new(RoleOptions::default());
    let first = login(&pod);
    let path = pod.token_path();
    let dev_zero = |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    let mut cmd = command(RENEWER, with(&pod.env(), &[("VAULT_REAUTH", "true")]));
    cmd.stderr(Stdio::piped());
    // A bound for today's unbounded read, so a failing test costs the
    // machine at most this much.
    limits(&mut cmd, false, Some(768 << 20));
    let mut child = cmd.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || renewed(&first)),
        "first token never renewed"
    );
    swap_in(&path, dev_zero);
    let second = wait_new_token(&path, &first, Duration::from_secs(10));
    let running = child.try_wait().unwrap().is_none();
    let peak = if running { peak_rss_kib(child.id()) } else { 0 };
    eprintln!("renewer peak RSS after a /dev/zero link: {peak} KiB");
    let log = stop_if_running(child, running);
    assert!(running, "renewer died reading /dev/zero\n{log}");
    assert!(second.is_some(), "the link was never replaced\n{log}");
    assert!(peak < 32 * 1024, "peak RSS {peak} KiB\n{log}");
    // At start, without VAULT_REAUTH: exit 1 naming the file.
    swap_in(&path, dev_zero);
    let mut cmd = command(RENEWER, pod.env());
    cmd.stderr(Stdio::piped());
    limits(&mut cmd, false, Some(768 << 20));
    let end = end_within(cmd.spawn().unwrap(), None, Duration::from_secs(5));
    let log = end.log();
    assert_eq!(end.out.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&path.display().to_string()) && log.contains("link"),
        "{log}"
    );
}

/// Item 8: garbage written over the token file with VAULT_REAUTH=true is
/// an unusable token, replaced by a new login (a regression to exit 1).
#[test]
fn garbage_in_the_token_file_under_reauth_logs_in_again() {
    let pod = Pod::new(RoleOptions::default());
    let first = login(&pod);
    let path = pod.token_path();
    let mut child = spawn(RENEWER, with(&pod.env(), &[("VAULT_REAUTH", "true")]));
    assert!(wait_until(Duration::from_secs(5), || renewed(&first)));
    // In place, as `echo garbage > token` does.
    std::fs::write(&path, b"\x00\x01 not a token \xff\n").unwrap();
    let second = wait_new_token(&path, &first, Duration::from_secs(10));
    let running = child.try_wait().unwrap().is_none();
    let log = stop_if_running(child, running);
    assert!(running && second.is_some(), "{log}");
    assert!(log.contains("re-authenticating"), "{log}");
}

/// A pod with a token and a file target; its secret `secret/k8s/<name>/s`,
/// synchronized as `<name>`.
struct FileTarget {
    pod: Pod,
    name: String,
    target: PathBuf,
}

impl FileTarget {
    fn new() -> FileTarget {
        let pod = Pod::new(RoleOptions::default());
        login(&pod);
        let name = unique("ft");
        let target = pod.dir.join("secrets");
        std::fs::create_dir(&target).unwrap();
        let ft = FileTarget { pod, name, target };
        ft.put("1");
        ft
    }

    fn put(&self, v: &str) {
        // A folder of its own: tests that synchronize the demo folder
        // secret/k8s/ expect exactly its secrets.
        let path = format!("k8s/{}/s", self.name);
        stack().kv_put("secret", &path, json!({ "v": v }));
    }

    fn sync(&self) -> Output {
        let env = with(
            &self.pod.env(),
            &[
                ("VAULT_SECRETS", &format!("secret/k8s/{0}/s:{0}", self.name)),
                (
                    "SYNCHRONIZER_TARGET_DIR",
                    &self.target.display().to_string(),
                ),
            ],
        );
        let end = end_within(spawn(SYNCHRONIZER, env), None, Duration::from_secs(20));
        assert!(!end.killed, "synchronizer blocked\n{}", end.log());
        end.out
    }

    fn value(&self) -> String {
        std::fs::read_to_string(self.target.join(&self.name).join("v")).unwrap()
    }

    fn record(&self) -> PathBuf {
        self.target.join(".vault-kubernetes.json")
    }
}

/// The record of the file target deleted, or swapped for a FIFO or a
/// link: the run stops saying so, nothing is written or deleted; before,
/// a deleted record made every directory "not managed" (exit 0, rotation
/// stopped) and a FIFO blocked the synchronizer for ever.
#[test]
fn a_missing_or_hostile_record_stops_the_file_target() {
    let ft = FileTarget::new();
    let out = ft.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ft.value(), "1");
    let record = ft.record();
    let kept = std::fs::read(&record).unwrap();
    ft.put("2");
    std::fs::remove_file(&record).unwrap();
    let out = ft.sync();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("is missing") && log.contains(&ft.name),
        "{log}"
    );
    assert_eq!(ft.value(), "1", "nothing written");
    for hostile in ["fifo", "link"] {
        match hostile {
            "fifo" => swap_in(&record, fifo),
            _ => swap_in(&record, |p| {
                let real = p.with_file_name("elsewhere.json");
                std::fs::write(&real, &kept).unwrap();
                std::os::unix::fs::symlink(&real, p).unwrap()
            }),
        }
        let out = ft.sync();
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{hostile}: {log}");
        assert!(log.contains(".vault-kubernetes.json"), "{log}");
        assert_eq!(ft.value(), "1", "{hostile}: nothing written");
    }
    // The record restored: rotation resumes.
    std::fs::remove_file(&record).unwrap();
    std::fs::write(&record, &kept).unwrap();
    let out = ft.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ft.value(), "2");
}

/// A co-container swaps a secret's directory for a link to another
/// directory, back and forth, while the synchronizer writes: every
/// operation is relative to the directory it opened once, so nothing is
/// ever written through the link (before: each path was resolved again,
/// and writes landed in the other directory).
#[test]
fn the_file_target_never_writes_through_a_swapped_in_link() {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let ft = FileTarget::new();
    let out = ft.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    let outside = ft.pod.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dir = ft.target.join(&ft.name);
    let swap = ft.target.join(".swap");
    std::os::unix::fs::symlink(&outside, &swap).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, dir, swap) = (stop.clone(), dir.clone(), swap.clone());
        std::thread::spawn(move || {
            let exchange = || {
                renameat2(
                    AT_FDCWD,
                    &dir,
                    AT_FDCWD,
                    &swap,
                    RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap()
            };
            let mut swaps = 0u64;
            while !stop.load(Ordering::SeqCst) {
                exchange();
                swaps += 1;
            }
            // Leave the real directory in place.
            if swaps % 2 == 1 {
                exchange();
            }
            swaps
        })
    };
    let mut codes = Vec::new();
    for i in 0..12 {
        ft.put(&format!("v{i}"));
        codes.push(ft.sync().status.code());
    }
    stop.store(true, Ordering::SeqCst);
    let swaps = swapper.join().unwrap();
    let written: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    eprintln!("{swaps} swaps; exit codes {codes:?}; written outside: {written:?}");
    assert!(written.is_empty(), "written through the link: {written:?}");
    assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
}

// ---------------------------------------------------------------------------
// Item 6: every credential accounted for.

/// The renewer through `proxy`, with the revoke on shutdown asked and
/// `extra` variables.
fn revoking_renewer(proxy: &Proxy, pod: &Pod, extra: &[(&str, &str)]) -> Child {
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ADDR", &proxy.addr),
            ("VAULT_REVOKE_ON_SHUTDOWN", "true"),
        ],
    );
    spawn(RENEWER, with(&env, extra))
}

/// SIGTERM, then exit 0 within the bound (1 s for a login's answer, 2 s
/// of revokes, and slack); the log and OpenBao's audit events of
/// `revoke-self` meanwhile.
fn sigterm_audited(child: Child) -> (String, Vec<Value>) {
    let (end, revokes) = vault_audit(REVOKE, || sigterm_within(child, Duration::from_secs(5)));
    let log = end.log();
    assert!(!end.killed, "still running 5 s after SIGTERM\n{log}");
    assert_eq!(end.out.status.code(), Some(0), "{log}");
    assert!(end.took < Duration::from_secs(4), "{:?}\n{log}", end.took);
    (log, revokes)
}

/// The revoke of each of `tokens` is in the audit events, and each token
/// is invalid now.
fn assert_revoked(revokes: &[Value], log: &str, tokens: &[&str]) {
    for token in tokens {
        assert!(
            revoked_in_audit(revokes, token),
            "no revoke of a token reached OpenBao\n{log}"
        );
        assert!(
            stack().lookup(token).is_none(),
            "a token still valid\n{log}"
        );
    }
}

/// [`sigterm_audited`] and [`assert_revoked`]; the log.
fn sigterm_revokes_all(child: Child, tokens: &[&str]) -> String {
    let (log, revokes) = sigterm_audited(child);
    assert_revoked(&revokes, &log, tokens);
    log
}

/// [`revoking_renewer`], SIGTERM once `stalled` is in flight,
/// [`sigterm_revokes_all`] for `token`.
fn sigterm_revokes(
    proxy: &Proxy,
    pod: &Pod,
    token: &str,
    stalled: &str,
    extra: &[(&str, &str)],
) -> String {
    let child = revoking_renewer(proxy, pod, extra);
    proxy.wait_for(stalled);
    sigterm_revokes_all(child, &[token])
}

#[test]
fn sigterm_during_a_stalled_renewal_still_revokes() {
    let pod = Pod::new(RoleOptions::default());
    let token = login(&pod);
    let proxy = Proxy::new(|path, _| match path {
        "/v1/auth/token/renew-self" => Act::Stall,
        _ => Act::Forward,
    });
    // The renewal at start stalls.
    let log = sigterm_revokes(&proxy, &pod, &token, "/v1/auth/token/renew-self", &[]);
    assert!(log.contains("token revoked"), "{log}");
}

#[test]
fn sigterm_during_a_login_revokes_the_held_token() {
    let pod = Pod::new(RoleOptions::default());
    let token = login(&pod);
    let proxy = Proxy::new(|path, _| match path {
        "/v1/auth/kubernetes/login" => Act::Stall,
        _ => Act::Forward,
    });
    let child = revoking_renewer(&proxy, &pod, &[("VAULT_REAUTH", "true")]);
    proxy.wait_for("/v1/auth/token/renew-self");
    // The file removed: a new login, which stalls.
    std::fs::remove_file(pod.token_path()).unwrap();
    proxy.wait_for("/v1/auth/kubernetes/login");
    sigterm_revokes_all(child, &[&token]);
}

/// A login already sent when the signal comes: its answer is awaited (up
/// to 1 s) and the token it brings is revoked with the held one, rather
/// than left minted and unknown.
#[test]
fn sigterm_during_a_login_revokes_the_token_it_returns() {
    let pod = Pod::new(RoleOptions::default());
    let held = login(&pod);
    let proxy = Proxy::new(|path, _| match path {
        "/v1/auth/kubernetes/login" => Act::Delay(Duration::from_millis(500)),
        _ => Act::Forward,
    });
    let child = revoking_renewer(&proxy, &pod, &[("VAULT_REAUTH", "true")]);
    proxy.wait_for("/v1/auth/token/renew-self");
    std::fs::remove_file(pod.token_path()).unwrap();
    // In flight: seen by the proxy, held 500 ms before OpenBao gets it
    // (300 ms after the signal: the renewer waits up to 1 s).
    assert!(wait_until(Duration::from_secs(5), || !proxy
        .calls("/v1/auth/kubernetes/login")
        .is_empty()));
    std::thread::sleep(Duration::from_millis(200));
    let (log, revokes) = sigterm_audited(child);
    // OpenBao minted the token whatever the renewer did meanwhile.
    let mut answer = String::new();
    wait_until(Duration::from_secs(5), || {
        answer = proxy.calls("/v1/auth/kubernetes/login")[0].answer.clone();
        !answer.is_empty()
    });
    let minted: Value = serde_json::from_str(&answer).expect("OpenBao answered the login");
    let minted = minted["auth"]["client_token"].as_str().unwrap().to_string();
    record_secret(&minted);
    assert_revoked(&revokes, &log, &[&held, &minted]);
    assert!(
        !pod.token_path().exists(),
        "nothing written after the signal"
    );
}

#[test]
fn sigterm_during_the_lookup_of_a_handed_over_token_revokes_both() {
    let pod = Pod::new(RoleOptions::default());
    let held = login(&pod);
    let (next, next_path) = login_to(&pod, "next");
    let stalled = next.clone();
    let proxy = Proxy::new(move |path, token| {
        if path == "/v1/auth/token/lookup-self" && token == stalled {
            Act::Stall
        } else {
            Act::Forward
        }
    });
    let child = revoking_renewer(&proxy, &pod, &[]);
    proxy.wait_for("/v1/auth/token/renew-self");
    std::fs::rename(&next_path, pod.token_path()).unwrap();
    assert!(wait_until(Duration::from_secs(5), || proxy
        .calls("/v1/auth/token/lookup-self")
        .iter()
        .any(|c| c.token == next)));
    std::thread::sleep(Duration::from_millis(300));
    sigterm_revokes_all(child, &[&held, &next]);
}

#[test]
fn sigterm_during_a_rate_limit_wait_still_revokes() {
    let pod = Pod::new(RoleOptions::default());
    let token = login(&pod);
    // One request per 5 s: the lookup at start takes the burst, the
    // renewal at start waits for its turn; the signal comes in that wait.
    let proxy = Proxy::new(|_, _| Act::Forward);
    let log = sigterm_revokes(
        &proxy,
        &pod,
        &token,
        "/v1/auth/token/lookup-self",
        &[("VAULT_RATE_LIMIT", "0.2:1")],
    );
    assert!(proxy.calls("/v1/auth/token/renew-self").is_empty(), "{log}");
    assert!(stack().lookup(&token).is_none(), "token still valid\n{log}");
}

#[test]
fn a_handed_over_token_is_kept_while_vault_answers_503() {
    let pod = Pod::new(RoleOptions::default());
    let held = login(&pod);
    let (next, next_path) = login_to(&pod, "next");
    let failing = Arc::new(AtomicBool::new(true));
    let (flag, unavailable) = (failing.clone(), next.clone());
    let proxy = Proxy::new(move |_, token| {
        if flag.load(Ordering::SeqCst) && token == unavailable {
            Act::Reply(503, r#"{"errors":["Vault is sealed"]}"#)
        } else {
            Act::Forward
        }
    });
    let env = with(
        &pod.env(),
        &[("VAULT_ADDR", &proxy.addr), ("VAULT_REAUTH", "true")],
    );
    let mut child = spawn(RENEWER, env);
    proxy.wait_for("/v1/auth/token/renew-self");
    std::fs::rename(&next_path, pod.token_path()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let kept = std::fs::read_to_string(pod.token_path()).unwrap();
    let logins = proxy.calls("/v1/auth/kubernetes/login").len();
    let running = child.try_wait().unwrap().is_none();
    // Vault answers again: the handed-over token is loaded and renewed.
    failing.store(false, Ordering::SeqCst);
    let loaded = wait_until(Duration::from_secs(15), || renewed(&next));
    let log = stop_if_running(child, running);
    assert!(running, "{log}");
    assert!(
        kept == next && logins == 0,
        "handed-over token overwritten ({logins} logins)\n{log}"
    );
    assert!(loaded, "handed-over token never loaded\n{log}");
    assert!(
        log.contains("token file changed - loaded the new token"),
        "{log}"
    );
    assert!(stack().lookup(&held).is_some(), "nothing revoked");
}

#[test]
fn the_renewer_waits_for_an_unreachable_vault_at_start() {
    let pod = Pod::new(RoleOptions::default());
    let token = login(&pod);
    let late = late_listener(stack().get("VAULT_ADDR"), Duration::from_secs(6));
    let mut child = spawn(RENEWER, with(&pod.env(), &[("VAULT_ADDR", &late)]));
    std::thread::sleep(Duration::from_secs(5));
    let waiting = child.try_wait().unwrap().is_none();
    let came = wait_until(Duration::from_secs(20), || renewed(&token));
    let log = stop_if_running(child, waiting);
    assert!(waiting, "gave up on an unreachable Vault\n{log}");
    assert!(came, "never renewed once Vault came\n{log}");
    assert!(log.contains("retrying"), "{log}");
}

/// A login answer OpenBao minted a token for, mangled on the way (lease of
/// zero): not retried (each retry mints another token), and the token it
/// carries is revoked.
#[test]
fn a_malformed_login_answer_is_not_retried_and_its_token_is_revoked() {
    let pod = Pod::new(RoleOptions::default());
    let proxy = Proxy::new(|path, _| match path {
        "/v1/auth/kubernetes/login" => Act::Rewrite(|body| {
            let mut v: Value = serde_json::from_str(body).unwrap();
            v["auth"]["lease_duration"] = 0.into();
            v.to_string()
        }),
        _ => Act::Forward,
    });
    let out = run(
        AUTHENTICATOR,
        with(&pod.env(), &[("VAULT_ADDR", &proxy.addr)]),
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let logins = proxy.calls("/v1/auth/kubernetes/login");
    assert_eq!(logins.len(), 1, "{log}");
    let answer: Value = serde_json::from_str(&logins[0].answer).unwrap();
    let minted = answer["auth"]["client_token"].as_str().unwrap();
    record_secret(minted);
    assert!(
        stack().lookup(minted).is_none(),
        "minted token left valid\n{log}"
    );
    assert!(log.contains("lease_duration of 0s"), "{log}");
    assert!(!pod.token_path().exists());
}

/// VAULT_TOKEN_FILE_OWNER a non-root program may not give: found before
/// the login, so no token is minted to be lost, on every restart.
#[test]
fn the_token_file_owner_is_tried_before_any_login() {
    const UID: u32 = 47012;
    let pod = Pod::new(RoleOptions::default());
    for p in [pod.dir.join("tokens"), pod.dir.join("sa/token")] {
        std::os::unix::fs::chown(&p, Some(UID), Some(UID)).unwrap();
    }
    let proxy = Proxy::new(|_, _| Act::Forward);
    for (bin, extra) in [(AUTHENTICATOR, ""), (RENEWER, "true")] {
        let env = with(
            &pod.env(),
            &[
                ("VAULT_ADDR", &proxy.addr),
                ("VAULT_TOKEN_FILE_OWNER", "0:0"),
                ("VAULT_REAUTH", extra),
            ],
        );
        let out = command(bin, env).uid(UID).gid(UID).output().unwrap();
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(log.contains("VAULT_TOKEN_FILE_OWNER"), "{log}");
        assert!(
            proxy.calls("/v1/auth/").is_empty(),
            "{bin} logged in\n{log}"
        );
    }
    assert!(!pod.token_path().exists());
}

// ---------------------------------------------------------------------------
// Item 7: no core dump.

/// Each program, stopped by SIGABRT while it holds credentials, with
/// `ulimit -c unlimited` and `core` as the kernel's pattern: no core.
#[test]
fn no_program_leaves_a_core_dump() {
    let pod = Pod::new(RoleOptions::default());
    login(&pod);
    let proxy = Proxy::new(|path, _| {
        if path.starts_with("/v1/auth/kubernetes/login") || path.starts_with("/v1/secret/") {
            Act::Stall
        } else {
            Act::Forward
        }
    });
    let env = with(&pod.env(), &[("VAULT_ADDR", &proxy.addr)]);
    let sync_env = with(
        &env,
        &[
            ("VAULT_SECRETS", "secret/k8s/first"),
            ("POD_NAMESPACE", &pod.namespace),
        ],
    );
    let env_env = with(
        &env,
        &[
            ("VAULT_TOKEN_PATH", ""),
            ("DB", "vault:secret/data/k8s/first#password"),
        ],
    );
    for (bin, env, busy) in [
        (AUTHENTICATOR, env.clone(), "/v1/auth/kubernetes/login"),
        (RENEWER, env.clone(), "/v1/auth/token/renew-self"),
        (SYNCHRONIZER, sync_env, "/v1/secret/"),
        (ENV, env_env, "/v1/auth/kubernetes/login"),
    ] {
        let cwd = pod.dir.join(format!(
            "cwd-{}",
            Path::new(bin).file_name().unwrap().to_string_lossy()
        ));
        std::fs::create_dir_all(&cwd).unwrap();
        let before = proxy.calls(busy).len();
        let mut cmd = command(bin, env);
        if bin == ENV {
            cmd.args(["--", "/bin/true"]);
        }
        cmd.current_dir(&cwd).stderr(Stdio::piped());
        limits(&mut cmd, true, None);
        let child = cmd.spawn().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || proxy.calls(busy).len() > before),
            "{bin} never reached {busy}"
        );
        let end = end_within(
            child,
            Some(nix::sys::signal::SIGABRT),
            Duration::from_secs(10),
        );
        let cores: Vec<_> = std::fs::read_dir(&cwd)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("core"))
            .collect();
        // The core holds the token: never leave it behind.
        let _ = std::fs::remove_dir_all(&cwd);
        assert_eq!(end.out.status.signal(), Some(6), "{bin}: {}", end.log());
        assert!(
            !end.out.status.core_dumped(),
            "{bin} dumped core: {cores:?}"
        );
        assert!(cores.is_empty(), "{bin}: {cores:?}");
    }
}

const ENV: &str = env!("CARGO_BIN_EXE_vault-kubernetes-env");

/// vault-kubernetes-env turns its own cores off, but the app it becomes
/// gets the core size limit the container had: the app's cores are its
/// own business.
#[test]
fn the_app_of_the_env_wrapper_keeps_its_core_limit() {
    let mut cmd = command(ENV, [("PATH", "/usr/bin:/bin")]);
    cmd.args(["--", "/bin/sh", "-c", "ulimit -c"]);
    limits(&mut cmd, true, None);
    let out = cmd.output().unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unlimited",
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Item 8: the smaller ones.

#[test]
fn a_missing_client_certificate_is_not_retried_and_named() {
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ADDR", s.get("VK_VAULT_MTLS_ADDR")),
            ("VAULT_CACERT", s.get("VK_CA_CERT")),
            ("LOGIN_TIMEOUT", "10s"),
        ],
    );
    let out = run(AUTHENTICATOR, env);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(!log.contains("retrying"), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("client certificate") && last.contains("VAULT_CLIENT_CERT"),
        "{last}"
    );
}

/// VAULT_CLIENT_TIMEOUT=0 is no timeout, as in Vault's Go client (it gave
/// each try about 1 ms).
#[test]
fn a_client_timeout_of_0_is_no_timeout() {
    let pod = Pod::new(RoleOptions::default());
    let proxy = Proxy::new(|_, _| Act::Delay(Duration::from_millis(300)));
    let out = run(
        AUTHENTICATOR,
        with(
            &pod.env(),
            &[("VAULT_ADDR", &proxy.addr), ("VAULT_CLIENT_TIMEOUT", "0")],
        ),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(proxy.calls("/v1/auth/kubernetes/login").len(), 1, "{log}");
    let token = std::fs::read_to_string(pod.token_path()).unwrap();
    assert!(stack().lookup(&token).is_some());
}

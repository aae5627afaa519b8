//! Test support: the real local stack started by `scripts/stack.sh up`.
//!
//! Reads the stack's env file and offers admin clients for OpenBao and the
//! API server, so each test makes its own namespace, service account, Vault
//! role and KV path and tests run in parallel. A stack that is not up is a
//! test failure with the reason, never a skip.
//!
//! Before writing a helper, look here; what each test file repeats belongs
//! in this module:
//! - a test's own area: [`Pod::new`] (namespace, service account, Vault
//!   role; [`RoleOptions::ttl`]), [`pod_with_policy`] with [`kv_rules`] or
//!   [`kv2_rules`] (a fresh `secret/<base>/` and a policy for it),
//!   [`Pod::login`] (the authenticator, checked; returns the token);
//! - programs: [`Pod::run`] (the pod's environment with changes, see
//!   [`with`]), [`run`], [`spawn`] and [`sigterm`] for long-running ones,
//!   [`stop_with_sigterm`], [`assert_ok`] and [`assert_fails`] (exit 0 or 1,
//!   returning the log), [`stderr`];
//! - in-process fakes, only for faults a real server cannot produce:
//!   [`read_request`], [`late_listener`], [`Gate`], [`connect_proxy`];
//! - what the servers saw: [`kube_audit`], [`vault_audit`], [`wait_until`];
//! - pods on the single-node cluster: [`cluster`].
#![allow(dead_code)] // each test file uses a different part

pub mod cluster;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use vault_kubernetes::config::TlsSettings;
use vault_kubernetes::http::{HttpClient, Method, Request, Retry};

pub struct Stack {
    pub env: HashMap<String, String>,
    vault: HttpClient,
    kube: HttpClient,
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let file = stack_env_file();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "the local stack is not up ({}: {e}); run scripts/stack.sh up",
                file.display()
            )
        });
        let env: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let vault = HttpClient::new(
            &env["VAULT_ADDR"],
            &TlsSettings::default(),
            None,
            Duration::from_secs(30),
            vec![("X-Vault-Token".into(), env["VK_VAULT_ROOT_TOKEN"].clone())],
        )
        .unwrap();
        let kube = HttpClient::new(
            &env["VK_KUBE_ADDR"],
            &TlsSettings {
                ca_file: Some(env["VK_CA_CERT"].clone().into()),
                ..Default::default()
            },
            None,
            Duration::from_secs(30),
            vec![(
                "Authorization".into(),
                format!("Bearer {}", env["VK_KUBE_ADMIN_TOKEN"]),
            )],
        )
        .unwrap();
        record_secret(&env["VK_VAULT_ROOT_TOKEN"]);
        record_secret(&env["VK_KUBE_ADMIN_TOKEN"]);
        Stack { env, vault, kube }
    })
}

/// The env file of the stack the tests use: `$VK_STACK_DIR/env`, else
/// `target/stack/env`.
pub fn stack_env_file() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Tests may read the environment: the rule in clippy.toml is for the library.
    #[allow(clippy::disallowed_methods)]
    std::env::var("VK_STACK_DIR")
        .map(|d| PathBuf::from(d).join("env"))
        .unwrap_or_else(|_| root.join("target/stack/env"))
}

/// Where every test binary leaves the programs' log lines and the secret
/// values it used, for `tests/log_scan.rs`, which `scripts/test.sh` runs
/// after all other tests.
pub const LOG_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/vk-logs");

fn append(file: &str, text: &[u8]) {
    use std::io::Write;
    let _ = std::fs::create_dir_all(LOG_DIR);
    let path = Path::new(LOG_DIR).join(format!("{file}-{}", std::process::id()));
    // One write per call with O_APPEND: parallel tests do not interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text);
    }
}

/// Records a program's stderr once (tests may look at the same output twice).
pub fn record_log(out: &Output) {
    use std::hash::{BuildHasher, RandomState};
    static SEEN: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    static HASH: OnceLock<RandomState> = OnceLock::new();
    if out.stderr.is_empty() {
        return;
    }
    let h = HASH.get_or_init(RandomState::new).hash_one(&out.stderr);
    let mut seen = SEEN.lock().unwrap();
    if seen.contains(&h) {
        return;
    }
    seen.push(h);
    let mut text = out.stderr.clone();
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    append("log", &text);
}

/// Text the programs left outside their logs (a termination message, an
/// Event's reason and note): scanned for secrets like log lines.
/// Each text once per test binary (tests poll the same Events).
pub fn record_status(text: &str) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let line = format!("{}\n", text.replace('\n', "\\n"));
    let mut seen = SEEN.lock().unwrap();
    if !seen.contains(&line) {
        append("status", line.as_bytes());
        seen.push(line);
    }
}

/// A value no log line may contain: a token, JWT, secret id, password or
/// KV value a test used. Shorter than 6 characters is too common to scan.
pub fn record_secret(value: &str) {
    if value.len() >= 6 && !value.contains('\n') {
        append("secrets", format!("{value}\n").as_bytes());
    }
}

fn record_secrets(data: &Value) {
    match data {
        Value::String(s) => record_secret(s.strip_prefix("base64:").unwrap_or(s)),
        Value::Object(m) => m.values().for_each(record_secrets),
        Value::Array(a) => a.iter().for_each(record_secrets),
        _ => {}
    }
}

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn call(
    client: &HttpClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, vault_kubernetes::Error> {
    let mut req = Request::new(method, path);
    if let Some(b) = &body {
        req = req.json(b);
    }
    let resp = client.send(&req, Retry::Times(2))?;
    if resp.body.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
}

impl Stack {
    pub fn get(&self, name: &str) -> &str {
        &self.env[name]
    }

    /// Root-token call to OpenBao; panics on error.
    pub fn vault(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_vault(method, path, body)
            .unwrap_or_else(|e| panic!("vault {path}: {e}"))
    }

    pub fn try_vault(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, vault_kubernetes::Error> {
        call(&self.vault, method, &format!("/v1/{path}"), body)
    }

    /// Admin call to kube-apiserver; panics on error.
    pub fn kube(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_kube(method, path, body)
            .unwrap_or_else(|e| panic!("kube {path}: {e}"))
    }

    pub fn try_kube(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, vault_kubernetes::Error> {
        call(&self.kube, method, path, body)
    }

    pub fn kv_put(&self, mount: &str, path: &str, data: Value) {
        record_secrets(&data);
        self.vault(
            Method::Post,
            &format!("{mount}/data/{path}"),
            Some(json!({ "data": data })),
        );
    }

    pub fn kv1_put(&self, mount: &str, path: &str, data: Value) {
        record_secrets(&data);
        self.vault(Method::Post, &format!("{mount}/{path}"), Some(data));
    }

    /// Looks up a token with the root token; `None` when it is invalid.
    pub fn lookup(&self, token: &str) -> Option<Value> {
        self.try_vault(
            Method::Post,
            "auth/token/lookup",
            Some(json!({ "token": token })),
        )
        .ok()
        .map(|v| v["data"].clone())
    }

    pub fn policy(&self, name: &str, hcl: &str) {
        self.vault(
            Method::Put,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        );
    }
}

/// A namespace with a bound service account, RBAC, a pod-like
/// service-account directory and a Vault role at the `kubernetes` mount.
pub struct Pod {
    pub namespace: String,
    pub service_account: String,
    pub role: String,
    pub dir: PathBuf,
}

pub struct RoleOptions<'a> {
    pub policies: &'a [&'a str],
    pub ttl: &'a str,
    pub max_ttl: &'a str,
    pub mount: &'a str,
    pub extra: Value,
}

impl RoleOptions<'_> {
    /// The default role (policy `vk-demo`) with these token TTLs, e.g. `("3s", "1h")`.
    pub fn ttl(ttl: &'static str, max_ttl: &'static str) -> RoleOptions<'static> {
        RoleOptions {
            ttl,
            max_ttl,
            ..Default::default()
        }
    }
}

impl Default for RoleOptions<'_> {
    fn default() -> Self {
        RoleOptions {
            policies: &["vk-demo"],
            ttl: "1h",
            max_ttl: "24h",
            mount: "kubernetes",
            extra: json!({}),
        }
    }
}

impl Pod {
    pub fn new(role: RoleOptions<'_>) -> Pod {
        let s = stack();
        let namespace = unique("t");
        let sa = "app".to_string();
        s.kube(
            Method::Post,
            "/api/v1/namespaces",
            Some(json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":namespace}})),
        );
        s.kube(
            Method::Post,
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            Some(json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":sa}})),
        );
        s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"), Some(json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"sync"},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list","create","update","delete"]}]})));
        s.kube(Method::Post, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"), Some(json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"sync"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"sync"},
            "subjects":[{"kind":"ServiceAccount","name":sa,"namespace":namespace}]})));
        s.kube(Method::Post, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", Some(json!({
            "apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":format!("{namespace}-delegator")},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:auth-delegator"},
            "subjects":[{"kind":"ServiceAccount","name":sa,"namespace":namespace}]})));
        let dir = std::env::temp_dir().join(format!("vk-{namespace}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sa")).unwrap();
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        std::fs::write(dir.join("sa/token"), mint_jwt(&namespace, &sa, None)).unwrap();
        std::fs::copy(s.get("VK_CA_CERT"), dir.join("sa/ca.crt")).unwrap();
        std::fs::write(dir.join("sa/namespace"), &namespace).unwrap();
        let pod = Pod {
            role: namespace.clone(),
            namespace,
            service_account: sa,
            dir,
        };
        pod.vault_role(&role);
        pod
    }

    /// Creates (or rewrites) the pod's Vault role at `opts.mount`.
    pub fn vault_role(&self, opts: &RoleOptions<'_>) {
        let mut body = json!({
            "bound_service_account_names": [self.service_account],
            "bound_service_account_namespaces": [self.namespace],
            "token_policies": opts.policies,
            "token_ttl": opts.ttl,
            "token_max_ttl": opts.max_ttl,
        });
        if let (Some(b), Some(extra)) = (body.as_object_mut(), opts.extra.as_object()) {
            b.extend(extra.clone());
        }
        stack().vault(
            Method::Post,
            &format!("auth/{}/role/{}", opts.mount, self.role),
            Some(body),
        );
    }

    /// Takes the Role on Secrets away from the service account (the file
    /// target needs no Kubernetes permission).
    pub fn unbind_role(&self) {
        stack().kube(
            Method::Delete,
            &format!(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings/sync",
                self.namespace
            ),
            None,
        );
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("tokens/token")
    }

    /// Runs `bin` in this pod, with [`Pod::env`] changed by `changes` (see [`with`]).
    pub fn run(&self, bin: &str, changes: &[(&str, &str)]) -> Output {
        run(bin, with(&self.env(), changes))
    }

    /// Runs the authenticator and checks it succeeded: the pod's token is
    /// at [`Pod::token_path`]. Returns the token.
    pub fn login(&self) -> String {
        assert_ok(&run(AUTHENTICATOR, self.env()));
        let token = std::fs::read_to_string(self.token_path()).unwrap();
        record_secret(&token);
        token
    }

    /// The environment of a container of this pod, nothing else.
    pub fn env(&self) -> Vec<(String, String)> {
        let s = stack();
        [
            ("VAULT_ADDR", s.get("VAULT_ADDR").to_string()),
            ("VAULT_ROLE", self.role.clone()),
            ("VAULT_TOKEN_PATH", self.token_path().display().to_string()),
            (
                "SERVICE_ACCOUNT_TOKEN_PATH",
                self.dir.join("sa/token").display().to_string(),
            ),
            (
                "KUBERNETES_SERVICE_HOST",
                s.get("KUBERNETES_SERVICE_HOST").to_string(),
            ),
            (
                "KUBERNETES_SERVICE_PORT",
                s.get("KUBERNETES_SERVICE_PORT").to_string(),
            ),
            (
                "KUBERNETES_SERVICEACCOUNT_DIR",
                self.dir.join("sa").display().to_string(),
            ),
            ("LOGIN_TIMEOUT", "10s".to_string()),
            // The synchronizer's owner identity: host tests run no pod to
            // take it from (tests/safety_sync.rs covers the default).
            ("SYNCHRONIZER_ID", format!("test/{}", self.namespace)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn secret(&self, name: &str) -> Option<Value> {
        stack()
            .try_kube(
                Method::Get,
                &format!("/api/v1/namespaces/{}/secrets/{name}", self.namespace),
                None,
            )
            .ok()
    }

    pub fn secret_names(&self) -> Vec<String> {
        let list = stack().kube(
            Method::Get,
            &format!("/api/v1/namespaces/{}/secrets", self.namespace),
            None,
        );
        let mut names: Vec<String> = list["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn put_secret(&self, body: Value) -> Value {
        stack().kube(
            Method::Post,
            &format!("/api/v1/namespaces/{}/secrets", self.namespace),
            Some(body),
        )
    }
}

/// A service-account JWT from the TokenRequest API, optionally bound to an object.
pub fn mint_jwt(namespace: &str, sa: &str, bound: Option<Value>) -> String {
    let s = stack();
    let mut spec = json!({ "audiences": [s.get("VK_KUBE_AUDIENCE")], "expirationSeconds": 3600 });
    if let Some(b) = bound {
        spec["boundObjectRef"] = b;
    }
    let v = s.kube(
        Method::Post,
        &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
        Some(json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec })),
    );
    let jwt = v["status"]["token"].as_str().unwrap().to_string();
    record_secret(&jwt);
    jwt
}

/// Vault policy rules to read and list `secret/<base>/` (KV v2).
pub fn kv2_rules(base: &str) -> String {
    format!(
        "path \"secret/data/{base}/*\" {{ capabilities = [\"read\"] }}\n\
         path \"secret/metadata/{base}/*\" {{ capabilities = [\"list\"] }}\n"
    )
}

/// [`kv2_rules`] and the same on `kv1/<base>/` (KV v1).
pub fn kv_rules(base: &str) -> String {
    format!(
        "{}path \"kv1/{base}/*\" {{ capabilities = [\"read\", \"list\"] }}\n",
        kv2_rules(base)
    )
}

/// A test's own Vault area: a fresh `base` (`unique(prefix)`), a policy
/// `p-<base>` with `rules(base)`, and a pod whose Vault role has that policy
/// and the `extra` ones (each with the role's default TTLs). Returns both.
pub fn pod_with_policy(
    prefix: &str,
    rules: impl FnOnce(&str) -> String,
    extra: &[&str],
) -> (Pod, String) {
    let base = unique(prefix);
    let policy = format!("p-{base}");
    stack().policy(&policy, &rules(&base));
    let mut policies = vec![policy.as_str()];
    policies.extend_from_slice(extra);
    let pod = Pod::new(RoleOptions {
        policies: &policies,
        ..Default::default()
    });
    (pod, base)
}

pub const AUTHENTICATOR: &str = env!("CARGO_BIN_EXE_vault-kubernetes-authenticator");
pub const SYNCHRONIZER: &str = env!("CARGO_BIN_EXE_vault-kubernetes-synchronizer");
pub const RENEWER: &str = env!("CARGO_BIN_EXE_vault-kubernetes-token-renewer");

/// A binary with exactly this environment (nothing inherited).
pub fn command<K: AsRef<str>, V: AsRef<str>>(
    bin: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear().stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k.as_ref(), v.as_ref());
    }
    cmd
}

pub fn run<K: AsRef<str>, V: AsRef<str>>(
    bin: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Output {
    let out = command(bin, env).output().unwrap();
    record_log(&out);
    out
}

/// A long-running program started with exactly `env`, its stderr piped
/// (read it with `wait_with_output`, then [`stderr`]).
pub fn spawn<K: AsRef<str>, V: AsRef<str>>(
    bin: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> std::process::Child {
    command(bin, env).stderr(Stdio::piped()).spawn().unwrap()
}

/// Sends SIGTERM to a program a test started (and has not waited for yet).
pub fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .expect("send SIGTERM");
}

/// Panics with the program's stderr unless it exited 0; returns that
/// stderr (recorded for the log scan), for the assertions that follow.
pub fn assert_ok(out: &Output) -> String {
    let log = stderr(out);
    assert!(out.status.success(), "{log}");
    log
}

/// Panics with the program's stderr unless it exited 1, the programs' one
/// failure code; returns that stderr, for the assertions on why.
pub fn assert_fails(out: &Output) -> String {
    let log = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    log
}

pub fn stderr(out: &Output) -> String {
    record_log(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `env` with some variables set or replaced (`""` removes).
pub fn with(env: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    for (k, v) in changes {
        if !v.is_empty() {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

impl Stack {
    /// Root-token call inside an OpenBao namespace.
    pub fn vault_in(
        &self,
        namespace: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let client = HttpClient::new(
            self.get("VAULT_ADDR"),
            &TlsSettings::default(),
            None,
            Duration::from_secs(30),
            vec![
                (
                    "X-Vault-Token".into(),
                    self.get("VK_VAULT_ROOT_TOKEN").to_string(),
                ),
                ("X-Vault-Namespace".into(), namespace.to_string()),
            ],
        )
        .unwrap();
        call(&client, method, &format!("/v1/{path}"), body)
            .unwrap_or_else(|e| panic!("vault {namespace}/{path}: {e}"))
    }

    /// An AppRole role (in `namespace` when given) with these policies;
    /// returns (role_id, secret_id).
    pub fn approle(
        &self,
        namespace: Option<&str>,
        policies: &[&str],
        extra: Value,
    ) -> (String, String) {
        let name = unique("ar");
        let v = |m, p: &str, b| match namespace {
            Some(ns) => self.vault_in(ns, m, p, b),
            None => self.vault(m, p, b),
        };
        let mut body = json!({ "token_policies": policies, "token_ttl": "1h" });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        v(
            Method::Post,
            &format!("auth/approle/role/{name}"),
            Some(body),
        );
        let role_id = v(
            Method::Get,
            &format!("auth/approle/role/{name}/role-id"),
            None,
        )["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret_id = v(
            Method::Post,
            &format!("auth/approle/role/{name}/secret-id"),
            None,
        )["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        record_secret(&secret_id);
        (role_id, secret_id)
    }
}

/// A loopback TCP forwarder to `target` that starts listening only after
/// `delay`: a real Vault that "comes up late". Returns the address.
pub fn late_listener(target: &str, delay: Duration) -> String {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = target.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        for conn in listener.incoming().flatten() {
            let target = target.clone();
            std::thread::spawn(move || {
                let Ok(upstream) = std::net::TcpStream::connect(&target) else {
                    return;
                };
                let (mut a, mut b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut d) = (upstream, conn);
                let _ = std::io::copy(&mut c, &mut d);
                let _ = d.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o777
}

/// Copies bytes both ways between two connections on threads of their own;
/// either side closing closes both.
pub fn splice(a: std::net::TcpStream, b: std::net::TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}

/// A loopback forwarder to a real server that can be switched off: while
/// closed, open connections are cut and new ones dropped, as if the server
/// were down. For outages the shared real server must not suffer.
pub struct Gate {
    pub addr: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Gate {
    pub fn new(target: &str) -> Gate {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let target = target.trim_start_matches("http://").to_string();
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                let Ok(upstream) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                c.lock()
                    .unwrap()
                    .extend([conn.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                splice(conn, upstream);
            }
        });
        Gate { addr, open, conns }
    }

    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// One HTTP/1.1 request as a test server reads it: the request line and
/// the headers, each as sent (with its CRLF), and the body.
pub struct HttpRequest {
    pub head: Vec<String>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The request target, e.g. `/v1/auth/kubernetes/login`.
    pub fn path(&self) -> &str {
        self.head[0].split_whitespace().nth(1).unwrap_or("")
    }

    /// The value of header `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head[1..].iter().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one request (head, then `Content-Length` bytes of body) for the
/// in-process fake servers; `None` when the connection ends or fails first.
pub fn read_request(reader: &mut impl std::io::BufRead) -> Option<HttpRequest> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    if head.is_empty() {
        return None;
    }
    let mut request = HttpRequest {
        head,
        body: Vec::new(),
    };
    let len = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; len];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

/// A minimal HTTP CONNECT proxy on loopback that tunnels every request to
/// `target` (whatever host the client names) and records the CONNECT
/// lines it saw. Returns (proxy URL, seen lines).
pub fn connect_proxy(target: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let target = target.trim_start_matches("http://").to_string();
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let (target, log) = (target.clone(), log.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let first = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(first);
                let Ok(upstream) = std::net::TcpStream::connect(&target) else {
                    return;
                };
                let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut a, mut b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut d) = (upstream, conn);
                let _ = std::io::copy(&mut c, &mut d);
                let _ = d.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Audit events on Secrets (`--audit-log-path`, see
/// `scripts/audit-policy.yaml`) that `namespace`'s service accounts caused
/// while `f` ran, completed requests only (not Vault's TokenReviews made
/// with a pod's JWT). The log is written in batches:
/// a marker request made after `f` is awaited, so no event is missed.
pub fn kube_audit<R>(namespace: &str, f: impl FnOnce() -> R) -> (R, Vec<Value>) {
    let s = stack();
    let log = PathBuf::from(s.get("VK_KUBE_AUDIT_LOG"));
    let start = std::fs::metadata(&log).map_or(0, |m| m.len());
    let result = f();
    let marker = unique("audit-marker");
    let _ = s.try_kube(
        Method::Get,
        &format!("/api/v1/namespaces/{namespace}/secrets/{marker}"),
        None,
    );
    let user = format!("system:serviceaccount:{namespace}:");
    let mut events = Vec::new();
    let seen = wait_until(Duration::from_secs(15), || {
        events = audit_lines(&log, start);
        events.iter().any(|e| e["objectRef"]["name"] == marker)
    });
    assert!(seen, "marker {marker} never reached {}", log.display());
    let events = events
        .into_iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["resource"] == "secrets"
                && e["user"]["username"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&user))
        })
        .collect();
    (result, events)
}

/// OpenBao audit responses whose request path contains `needle`, written
/// while `f` ran (the file audit device writes before it answers).
pub fn vault_audit<R>(needle: &str, f: impl FnOnce() -> R) -> (R, Vec<Value>) {
    let log = PathBuf::from(stack().get("VK_VAULT_AUDIT_LOG"));
    let start = std::fs::metadata(&log).map_or(0, |m| m.len());
    let result = f();
    let events = audit_lines(&log, start)
        .into_iter()
        .filter(|e| {
            e["type"] == "response"
                && e["request"]["path"]
                    .as_str()
                    .is_some_and(|p| p.contains(needle))
        })
        .collect();
    (result, events)
}

fn audit_lines(path: &Path, start: u64) -> Vec<Value> {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(std::io::SeekFrom::Start(start));
        let _ = file.read_to_string(&mut text);
    }
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Verbs of audit events, e.g. `["list", "list"]`.
pub fn verbs(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["verb"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Sends SIGTERM to a long-running program and checks that it stops as
/// promised: within a second (slack for a loaded machine), exit 0, with
/// `signal received - stop execution`. Returns its output.
pub fn stop_with_sigterm(child: std::process::Child) -> Output {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    record_log(&out);
    let log = stderr(&out);
    assert!(start.elapsed() < Duration::from_secs(1), "{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("signal received - stop execution"), "{log}");
    out
}

/// The path of qemu-aarch64-static (Debian qemu-user-static, installed by
/// scripts/setup.sh): the tests run arm64 binaries through it explicitly,
/// so no binfmt_misc registration is needed.
pub fn qemu_aarch64() -> &'static str {
    static QEMU: OnceLock<String> = OnceLock::new();
    QEMU.get_or_init(|| {
        // Tests may read the environment: the rule in clippy.toml is for the library.
        #[allow(clippy::disallowed_methods)]
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("qemu-aarch64-static"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("qemu-aarch64-static not in PATH: run scripts/setup.sh"))
            .display()
            .to_string()
    })
}

/// The release binary `vault-kubernetes-<program>` for a Rust `target`
/// (`x86_64-unknown-linux-musl`, `aarch64-unknown-linux-musl`), what the
/// images ship; every binary of the target is built on first use (a no-op
/// after scripts/build-images.sh).
pub fn release_binary(target: &str, program: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|t| t == target) {
        let mut cargo = Command::new("cargo");
        cargo
            .args(["build", "--release", "--locked", "--target", target])
            .current_dir(root);
        // cargo test sets this package's CARGO_PKG_* and CARGO_MANIFEST_*
        // for the test; ring's build script reruns when they change, so
        // passing them on would rebuild everything here and again from a
        // shell (scripts/build-images.sh unsets them for the same reason).
        #[allow(clippy::disallowed_methods)] // tests may read the environment
        for (name, _) in std::env::vars() {
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
            {
                cargo.env_remove(name);
            }
        }
        let out = cargo.output().unwrap();
        // Cargo's lines are not the programs': kept out of the log scan
        // (assert_ok records stderr, and they are not log lines).
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(target.to_string());
    }
    root.join(format!(
        "target/{target}/release/vault-kubernetes-{program}"
    ))
}

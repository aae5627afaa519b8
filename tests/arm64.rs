//! The arm64 binaries (`aarch64-unknown-linux-musl`, the release profile the
//! images ship) run under qemu user-mode emulation against the real stack.
//! qemu is called explicitly (`qemu-aarch64-static <binary>`), so no
//! binfmt_misc registration is needed or made. The test builds them once
//! with cargo, like tests/images.rs builds the images.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use vault_kubernetes::config::TlsSettings;
use vault_kubernetes::http::{HttpClient, Method, Request, Retry};

const TARGET: &str = "aarch64-unknown-linux-musl";
/// The size budget of every binary (README, developers' guide).
const MAX_BYTES: u64 = 2_500_000;

/// The release binary of `program` for arm64, built on first use.
fn binary(program: &str) -> PathBuf {
    release_binary(TARGET, program)
}

/// The arm64 `program` under emulation with exactly this environment.
fn arm64<K: AsRef<str>, V: AsRef<str>>(
    program: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Command {
    let mut cmd = command(qemu_aarch64(), env);
    cmd.arg(binary(program));
    cmd
}

fn run_arm64<K: AsRef<str>, V: AsRef<str>>(
    program: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Output {
    let out = arm64(program, env).output().unwrap();
    record_log(&out);
    out
}

/// `auth/token/lookup-self` with the token itself: it is valid and usable.
fn lookup_self(token: &str) -> Value {
    let client = HttpClient::new(
        stack().get("VAULT_ADDR"),
        &TlsSettings::default(),
        None,
        Duration::from_secs(30),
        vec![("X-Vault-Token".into(), token.to_string())],
    )
    .unwrap();
    let resp = client
        .send(
            &Request::new(Method::Get, "/v1/auth/token/lookup-self"),
            Retry::Times(2),
        )
        .unwrap_or_else(|e| panic!("lookup-self: {e}"));
    serde_json::from_slice::<Value>(&resp.body).unwrap()["data"].clone()
}

/// Logs the pod in with the arm64 authenticator; returns the token.
fn login(pod: &Pod) -> String {
    let out = run_arm64("authenticator", pod.env());
    let log = assert_ok(&out);
    assert!(
        log.contains(&format!(
            "successfully stored vault token at {}",
            pod.token_path().display()
        )),
        "{log}"
    );
    std::fs::read_to_string(pod.token_path()).unwrap()
}

/// A child process that is stopped and reaped however the test ends.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// SIGTERM, then the exit status and stderr; `None` if it did not
    /// exit within `limit`.
    fn terminate(mut self, limit: Duration) -> Option<Output> {
        let pid = nix::unistd::Pid::from_raw(self.child().id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
        let exited = wait_until(limit, || self.child().try_wait().unwrap().is_some());
        exited.then(|| self.0.take().unwrap().wait_with_output().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The ELF header's machine field and whether a program header asks for an
/// interpreter (a dynamic loader, which a FROM scratch image does not have).
fn elf_machine_and_interp(bytes: &[u8]) -> (u16, bool) {
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == PT_INTERP
    });
    (u16_at(0x12), interp)
}

#[test]
fn arm64_binaries_are_static_small_and_run() {
    const EM_AARCH64: u16 = 183;
    for program in ["authenticator", "synchronizer", "token-renewer", "env"] {
        let path = binary(program);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            elf_machine_and_interp(&bytes),
            (EM_AARCH64, false),
            "{program}: static aarch64"
        );
        assert!(
            bytes.len() as u64 <= MAX_BYTES,
            "{program}: {} bytes",
            bytes.len()
        );
        let no_env: [(&str, &str); 0] = [];
        let out = arm64(program, no_env).arg("--version").output().unwrap();
        assert_ok(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("vault-kubernetes-{program} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn arm64_authenticator_logs_in_over_mtls_and_writes_a_valid_token() {
    // TLS with a client certificate: ring's aarch64 assembly does the
    // handshake, the key exchange and the record encryption.
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ADDR", s.get("VK_VAULT_MTLS_ADDR")),
            ("VAULT_CACERT", s.get("VK_CA_CERT")),
            ("VAULT_CLIENT_CERT", s.get("VK_CLIENT_CERT")),
            ("VAULT_CLIENT_KEY", s.get("VK_CLIENT_KEY")),
        ],
    );
    let out = run_arm64("authenticator", env);
    let log = assert_ok(&out);
    assert!(log.contains("successfully authenticated to vault"), "{log}");
    let token = std::fs::read_to_string(pod.token_path()).unwrap();
    assert!(!log.contains(&token), "token never logged");
    let data = lookup_self(&token);
    assert_eq!(data["meta"]["service_account_namespace"], pod.namespace);
    assert_eq!(data["meta"]["role"], pod.role);
    assert!(data["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("vk-demo")));
    assert!(data["ttl"].as_u64().unwrap() > 0, "{data}");
}

#[test]
fn arm64_synchronizer_creates_the_demo_secrets() {
    let pod = Pod::new(RoleOptions::default());
    login(&pod);
    let env = with(
        &pod.env(),
        &[("VAULT_SECRETS", "secret/k8s/,secret/k8s/folder/")],
    );
    let out = run_arm64("synchronizer", env);
    assert_ok(&out);
    assert_eq!(
        pod.secret_names(),
        ["alpha", "beta", "first", "gamma", "second"]
    );
    // Values as demo/vault-setup.sh wrote them (base64 in the Secret).
    let first = pod.secret("first").unwrap();
    assert_eq!(first["data"], json!({"one": "MQ==", "two": "Mg=="}));
    let second = pod.secret("second").unwrap();
    // poison=base64:YXJzZW5pYw== is decoded to "arsenic", stored as is.
    assert_eq!(second["data"]["poison"], "YXJzZW5pYw==");
    assert_eq!(second["data"]["green"], "YXBwbGU=");
    let alpha = pod.secret("alpha").unwrap();
    assert_eq!(alpha["data"]["user"], "YWxwaGE=");
    assert!(
        alpha["metadata"]["annotations"]["vault-secret"].is_string(),
        "{alpha}"
    );
}

#[test]
fn arm64_renewer_renews_and_stops_on_sigterm() {
    let pod = Pod::new(RoleOptions::ttl("4s", "60s"));
    let token = login(&pod);
    let child = arm64("token-renewer", with(&pod.env(), &[("VAULT_TTL", "10s")]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let renewer = Running(Some(child));
    // VAULT_TTL lifts the TTL above the role's 4s, which only a renewal
    // can do; the renewal in the loop comes at about 2/3 of those 10s and
    // lifts it again (without it, 9 s later at most 1 s would be left).
    let ttl = || stack().lookup(&token).map(|d| d["ttl"].as_u64().unwrap());
    assert!(
        wait_until(Duration::from_secs(10), || ttl().is_some_and(|t| t > 5)),
        "the arm64 renewer never renewed the token"
    );
    std::thread::sleep(Duration::from_secs(9));
    assert!(
        ttl().is_some_and(|t| t > 3),
        "the arm64 renewer did not renew again in its loop"
    );
    let out = renewer
        .terminate(Duration::from_secs(5))
        .expect("the arm64 renewer exits within 5 s of SIGTERM");
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("start renewer loop")
            && log.matches("token renewed\n").count() >= 2
            && log.contains("token ttl 10s"),
        "{log}"
    );
    assert!(log.contains("signal received - stop execution"), "{log}");
    assert!(!log.contains(&token), "token never logged");
}

#[test]
fn arm64_env_installs_itself_and_execs_the_app() {
    // --install copies /proc/self/exe: under qemu-user that is the arm64
    // binary, as on an arm64 node.
    let dir = std::env::temp_dir().join(unique("vk-arm64-install"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = arm64("env", [("PATH", "/bin")])
        .args(["--install", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let installed = std::fs::read(dir.join("vault-kubernetes-env")).unwrap();
    assert_eq!(installed, std::fs::read(binary("env")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    // A reference resolved by the arm64 binary reaches the app it execs.
    let pod = Pod::new(RoleOptions::default());
    let env = with(
        &pod.env(),
        &[
            ("VAULT_TOKEN_PATH", ""),
            ("PATH", "/bin"),
            ("FIRST_ONE", "vault:secret/data/k8s/first#one"),
        ],
    );
    let out = arm64("env", env)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "test \"$FIRST_ONE\" = 1 && echo value-seen",
        ])
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "value-seen",
        "{log}"
    );
    assert!(log.contains("revoked the wrapper's token"), "{log}");
}

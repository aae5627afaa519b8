//! The programs' command line and start-up checks, as processes: one rule
//! for arguments (a lone `--help`/`-h` or `--version`/`-V` exits 0, anything
//! else exits 2 with a usage line), and a bad Secret name in
//! `VAULT_SECRETS` stops the synchronizer before any request.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Command, Output};

const PROGRAMS: [(&str, &str); 3] = [
    (
        env!("CARGO_BIN_EXE_vault-kubernetes-authenticator"),
        "vault-kubernetes-authenticator",
    ),
    (
        env!("CARGO_BIN_EXE_vault-kubernetes-synchronizer"),
        "vault-kubernetes-synchronizer",
    ),
    (
        env!("CARGO_BIN_EXE_vault-kubernetes-token-renewer"),
        "vault-kubernetes-token-renewer",
    ),
];

fn run(exe: &str, args: &[&str]) -> Output {
    Command::new(exe).args(args).env_clear().output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_lone_help_or_version_flag_exits_0() {
    for (exe, name) in PROGRAMS {
        for flag in ["--help", "-h"] {
            let out = run(exe, &[flag]);
            let stdout = text(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            assert!(stdout.starts_with(name), "{name} {flag}: {stdout}");
            assert!(stdout.contains("VAULT_TOKEN_PATH"), "{stdout}");
            assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
        }
        for flag in ["--version", "-V"] {
            let out = run(exe, &[flag]);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            assert_eq!(
                text(&out.stdout),
                format!("{name} {}\n", env!("CARGO_PKG_VERSION"))
            );
        }
    }
}

#[test]
fn any_other_argument_exits_2_with_a_usage_line() {
    for (exe, name) in PROGRAMS {
        for args in [
            &["help"][..],
            &["version"],
            &["--help", "extra"],
            &["--version", "--help"],
            &["-v"],
            &["--bogus"],
            &[""],
        ] {
            let out = run(exe, args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{name} {args:?}");
            assert!(
                stderr.contains(&format!("usage: {name} [--help | --version]")),
                "{name} {args:?}: {stderr}"
            );
            assert!(stderr.contains("unexpected arguments"), "{stderr}");
        }
    }
}

/// A synchronizer to files whose Vault is a listener that counts
/// connections; returns its output and whether anything connected.
fn sync_against_listener(secrets: &str, prefix: Option<&str>) -> (Output, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = std::env::temp_dir().join(format!(
        "vk-cli-{}-{}",
        std::process::id(),
        secrets.len() + prefix.map_or(0, str::len)
    ));
    let target = dir.join("files");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(dir.join("token"), "s.placeholder").unwrap();
    // The file target: no Kubernetes settings to get right, and the names
    // are checked the same way for both targets.
    let mut cmd = Command::new(PROGRAMS[1].0);
    cmd.env_clear()
        .env("VAULT_ADDR", format!("http://127.0.0.1:{port}"))
        .env("VAULT_TOKEN_PATH", dir.join("token"))
        .env("VAULT_SECRETS", secrets)
        .env("SYNCHRONIZER_TARGET_DIR", &target)
        // Nothing answers: give up on the first request quickly.
        .env("VAULT_CLIENT_TIMEOUT", "1s")
        .env("VAULT_MAX_RETRIES", "0");
    if let Some(p) = prefix {
        cmd.env("SECRET_PREFIX", p);
    }
    let out = cmd.output().unwrap();
    let connected = match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    (out, connected)
}

#[test]
fn a_bad_secret_name_stops_the_synchronizer_before_any_request() {
    for (secrets, prefix, var, bad) in [
        (
            "secret/k8s/first,secret/k8s/Bad_Name",
            None,
            "VAULT_SECRETS",
            "Bad_Name",
        ),
        ("secret/k8s/first:Not.OK", None, "VAULT_SECRETS", "Not.OK"),
        ("secret/k8s/first", Some("My_"), "SECRET_PREFIX", "My_"),
    ] {
        let (out, connected) = sync_against_listener(secrets, prefix);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{secrets}: {stderr}");
        assert!(
            stderr.contains(&format!("configuration error: {var}: ")),
            "{secrets}: {stderr}"
        );
        assert!(stderr.contains(&format!("{bad:?}")), "{secrets}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!connected, "{secrets}: a request was made: {stderr}");
    }
}

#[test]
fn the_same_settings_with_valid_names_do_make_requests() {
    // The listener above would see a request: without this, a synchronizer
    // failing for another reason before any request would pass the test.
    let (out, connected) = sync_against_listener("secret/k8s/first,secret/k8s/good-name", None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(connected, "{}", text(&out.stderr));
}

#[test]
fn a_missing_kubernetes_ca_is_reported_under_its_own_variable() {
    // The Kubernetes client's ca.crt comes from the service-account
    // directory; its errors named VAULT_CACERT, a variable nobody had set.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = std::env::temp_dir().join(format!("vk-cli-ca-{}", std::process::id()));
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(dir.join("token"), "s.placeholder").unwrap();
    std::fs::write(sa.join("token"), "placeholder").unwrap();
    std::fs::write(sa.join("namespace"), "default").unwrap();
    let out = Command::new(PROGRAMS[1].0)
        .env_clear()
        .env("VAULT_ADDR", format!("http://127.0.0.1:{port}"))
        .env("VAULT_TOKEN_PATH", dir.join("token"))
        .env("VAULT_SECRETS", "secret/k8s/first")
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", &port)
        .env("KUBERNETES_SERVICEACCOUNT_DIR", &sa)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("KUBERNETES_SERVICEACCOUNT_DIR"), "{stderr}");
    assert!(
        stderr.contains(&sa.join("ca.crt").display().to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("VAULT_CACERT"), "{stderr}");
}

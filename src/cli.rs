//! What the binaries share around their one library call: `--help` and
//! `--version` (the command-line rule is [`Flag::parse`]; the env wrapper
//! also takes its own arguments), reading the configuration, and turning an
//! error into one log line, the same line as termination message, and exit
//! code 1.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::{self, Env};
use crate::error::Result;
use crate::{log, termination};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Program {
    Authenticator,
    Synchronizer,
    TokenRenewer,
    Env,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Authenticator => "vault-kubernetes-authenticator",
            Program::Synchronizer => "vault-kubernetes-synchronizer",
            Program::TokenRenewer => "vault-kubernetes-token-renewer",
            Program::Env => "vault-kubernetes-env",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Program::Authenticator => "Logs in to Vault with the pod's service-account JWT (or AppRole) and writes the token to VAULT_TOKEN_PATH.",
            Program::Synchronizer => "Copies the Vault KV secrets listed in VAULT_SECRETS into Kubernetes Secrets of the pod's namespace, or into files under SYNCHRONIZER_TARGET_DIR; keeps leased credentials and certificates valid.",
            Program::TokenRenewer => "Keeps the token in VAULT_TOKEN_PATH alive for the pod's lifetime, re-authenticating when needed.",
            Program::Env => "Replaces every variable whose value is a Vault reference (vault:<path>#<key>[#<version>]) with the secret's value, then execs the command in its place (same PID).\n\nUsage: vault-kubernetes-env -- COMMAND [ARG...]\n       vault-kubernetes-env --install DIR   (copy itself to DIR/vault-kubernetes-env, mode 0555)",
        }
    }
}

const A: u8 = 1;
const S: u8 = 2;
const R: u8 = 4;
const E: u8 = 8;
const ALL: u8 = A | S | R | E;

/// (variable, default, meaning, programs)
const VARIABLES: &[(&str, &str, &str, u8)] = &[
    (
        "VAULT_ADDR",
        "https://127.0.0.1:8200",
        "Vault address: http(s)://host:port or unix:///path/to.sock",
        ALL,
    ),
    (
        "VAULT_AGENT_ADDR",
        "-",
        "address of a Vault Agent or Proxy; overrides VAULT_ADDR",
        ALL,
    ),
    (
        "VAULT_RATE_LIMIT",
        "-",
        "client-side limit of Vault requests per second: rate or rate:burst",
        ALL,
    ),
    (
        "VAULT_DISABLE_REDIRECTS",
        "false",
        "do not follow Vault's redirects (else one, never https to http)",
        ALL,
    ),
    (
        "VAULT_CACERT",
        "-",
        "CA certificate file (PEM) to verify Vault",
        ALL,
    ),
    (
        "VAULT_CACERT_BYTES",
        "-",
        "CA certificates as a PEM string",
        ALL,
    ),
    (
        "VAULT_CAPATH",
        "-",
        "directory of CA certificate files",
        ALL,
    ),
    (
        "VAULT_CLIENT_CERT",
        "-",
        "client certificate for mTLS (with VAULT_CLIENT_KEY)",
        ALL,
    ),
    (
        "VAULT_CLIENT_KEY",
        "-",
        "client key for mTLS (with VAULT_CLIENT_CERT)",
        ALL,
    ),
    (
        "VAULT_SKIP_VERIFY",
        "false",
        "do not verify Vault's certificate (insecure, warns)",
        ALL,
    ),
    (
        "VAULT_TLS_SERVER_NAME",
        "-",
        "name to verify Vault's certificate against (SNI)",
        ALL,
    ),
    (
        "VAULT_NAMESPACE",
        "-",
        "Vault namespace (X-Vault-Namespace)",
        ALL,
    ),
    (
        "VAULT_CLIENT_TIMEOUT",
        "60s",
        "timeout of each request (0: none, as in Go)",
        ALL,
    ),
    (
        "VAULT_MAX_RETRIES",
        "2",
        "retries of transient failures (connection, 412, 429, 5xx except 501)",
        ALL,
    ),
    (
        "VAULT_HTTP_PROXY",
        "-",
        "proxy for Vault (also VAULT_PROXY_ADDR, else HTTPS_PROXY or HTTP_PROXY, and NO_PROXY)",
        ALL,
    ),
    (
        "VAULT_HEADERS",
        "-",
        "JSON object of extra request headers (no X-Vault-*)",
        ALL,
    ),
    ("VAULT_TOKEN_PATH", "required", "token file", A | S | R),
    (
        "VAULT_TOKEN_PATH",
        "-",
        "token file, used when it exists (else the wrapper logs in)",
        E,
    ),
    (
        "VAULT_TOKEN_FILE_MODE",
        "0640",
        "mode of the token file",
        A | R,
    ),
    (
        "VAULT_TOKEN_FILE_OWNER",
        "-",
        "owner of the token file: uid, uid:gid or :gid",
        A | R,
    ),
    (
        "VAULT_ROLE",
        "required for Kubernetes login",
        "Vault role of the Kubernetes auth method",
        A | R | E,
    ),
    (
        "VAULT_ROLE_ID",
        "-",
        "AppRole role ID (with VAULT_SECRET_ID: AppRole login)",
        A | R | E,
    ),
    ("VAULT_SECRET_ID", "-", "AppRole secret ID", A | R | E),
    (
        "VAULT_AUTH_MOUNT_PATH",
        "kubernetes (approle for AppRole)",
        "auth mount; kubernetes, /kubernetes, auth/kubernetes are the same",
        A | R | E,
    ),
    (
        "SERVICE_ACCOUNT_TOKEN_PATH",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "service-account JWT, re-read at every login",
        A | R | E,
    ),
    (
        "LOGIN_TIMEOUT",
        "30s",
        "deadline of a login, retries included",
        A | R | E,
    ),
    (
        "ALLOW_FAIL",
        "false",
        "exit 0 without a token file when login fails",
        A,
    ),
    (
        "ALLOW_FAIL",
        "false",
        "start the app without the values that failed (warning lines)",
        E,
    ),
    (
        "VAULT_ENV_FROM_PATH",
        "-",
        "comma-separated path[#version]: every key of those secrets becomes a variable",
        E,
    ),
    (
        "VAULT_TOKEN",
        "-",
        "vault:login hands the token to the app as VAULT_TOKEN instead of revoking it",
        E,
    ),
    (
        "VAULT_TTL",
        "0",
        "increment requested at each renewal (0: the role's TTL)",
        R,
    ),
    (
        "VAULT_REAUTH",
        "false",
        "log in again when the token cannot be renewed or is replaced",
        R,
    ),
    (
        "VAULT_REVOKE_ON_SHUTDOWN",
        "false",
        "revoke the token (renewer) or the leases written to files (synchronizer) on SIGTERM/SIGINT",
        R | S,
    ),
    (
        "VAULT_SECRETS",
        "required",
        "comma-separated path, path:name or folder/ entries; leased: creds:<path>[:name], cert:<path>?common_name=..[:name]",
        S,
    ),
    ("SECRET_PREFIX", "-", "prefix of every Secret name", S),
    (
        "SYNCHRONIZER_ANNOTATION",
        "vault-secret",
        "annotation key marking managed Secrets",
        S,
    ),
    (
        "SYNCHRONIZER_LABELS",
        "-",
        "k=v,k2=v2 labels on managed Secrets (also scope pruning)",
        S,
    ),
    (
        "SYNCHRONIZER_ID",
        "the pod's controller",
        "owner identity recorded on the Secrets (or the target directory); only what records it is updated or pruned",
        S,
    ),
    (
        "SYNCHRONIZER_PRUNE",
        "true",
        "delete managed Secrets no longer listed",
        S,
    ),
    (
        "SYNCHRONIZER_TARGET_DIR",
        "-",
        "write files laid out like a Secret volume here instead of Secrets (no Kubernetes access)",
        S,
    ),
    (
        "SYNCHRONIZER_FILE_MODE",
        "0440",
        "mode of the files of SYNCHRONIZER_TARGET_DIR",
        S,
    ),
    (
        "SYNCHRONIZER_FILE_OWNER",
        "-",
        "owner of those files: uid, uid:gid or :gid",
        S,
    ),
    (
        "SYNC_INTERVAL",
        "-",
        "keep running and re-sync at this interval",
        S,
    ),
    (
        "POD_NAMESPACE",
        "namespace file",
        "namespace of the Secrets and of the pod's Events",
        S | R,
    ),
    (
        "POD_NAME",
        "-",
        "this pod (downward API metadata.name; default: the host name for the synchronizer's identity): its Events, the synchronizer's with SYNC_INTERVAL",
        S | R,
    ),
    (
        "POD_UID",
        "-",
        "the pod's uid (metadata.uid), so kubectl describe pod lists its Events",
        S | R,
    ),
    (
        "KUBERNETES_SERVICE_HOST",
        "set by Kubernetes",
        "API server host",
        S | R,
    ),
    ("KUBERNETES_SERVICE_PORT", "443", "API server port", S | R),
    (
        "KUBERNETES_SERVICEACCOUNT_DIR",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "token, ca.crt and namespace for the API server",
        S | R,
    ),
    ("LOG_FORMAT", "text", "text (Go log layout) or json", ALL),
    (
        "TERMINATION_MESSAGE_PATH",
        "/dev/termination-log",
        "file for the final error line when exiting non-zero, if it exists",
        ALL,
    ),
];

pub fn help(program: Program) -> String {
    let bit = match program {
        Program::Authenticator => A,
        Program::Synchronizer => S,
        Program::TokenRenewer => R,
        Program::Env => E,
    };
    let mut out = format!(
        "{} {}\n{}\n\nConfigured by environment variables:\n",
        program.name(),
        env!("CARGO_PKG_VERSION"),
        program.about()
    );
    for (name, default, meaning, programs) in VARIABLES {
        if programs & bit != 0 {
            out.push_str(&format!("  {name:<30} {meaning} [default: {default}]\n"));
        }
    }
    out
}

/// What the command line asks for, besides running.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flag {
    Help,
    Version,
}

impl Flag {
    /// The one rule of the command line (the arguments after the program's
    /// name): none runs the program; exactly `--help` or `-h` asks for
    /// help, exactly `--version` or `-V` for the version; anything else,
    /// `help` and `--help extra` included, is an error (exit 2), since
    /// configuration is by environment variables only and a stray argument
    /// is a mistake in the manifest worth stopping on.
    pub fn parse(args: &[String]) -> std::result::Result<Option<Flag>, String> {
        match args {
            [] => Ok(None),
            [one] if one == "--help" || one == "-h" => Ok(Some(Flag::Help)),
            [one] if one == "--version" || one == "-V" => Ok(Some(Flag::Version)),
            _ => Err(format!(
                "unexpected arguments {args:?}; configuration is by environment variables"
            )),
        }
    }
}

/// The usage line printed with an argument error.
pub fn usage(program: Program) -> String {
    format!("usage: {} [--help | --version]", program.name())
}

/// Runs a program: handles flags, sets up logging, parses the
/// configuration with `parse`, runs `run`; any error is one log line, the
/// termination message (docs/events.md) and exit code 1.
pub fn main<C>(
    program: Program,
    parse: impl FnOnce(&Env) -> Result<C>,
    run: impl FnOnce(&C) -> Result<()>,
) -> ExitCode {
    start(program, false, |env, _| parse(env), run)
}

/// As [`main`], for the program that takes arguments (the env wrapper's
/// `-- COMMAND` or `--install DIR`): a lone `--help` or `--version` is
/// still the flag, anything else goes to `parse`, after the program's name.
pub fn main_with_args<C>(
    program: Program,
    parse: impl FnOnce(&Env, &[OsString]) -> Result<C>,
    run: impl FnOnce(&C) -> Result<()>,
) -> ExitCode {
    start(program, true, parse, run)
}

fn start<C>(
    program: Program,
    takes_args: bool,
    parse: impl FnOnce(&Env, &[OsString]) -> Result<C>,
    run: impl FnOnce(&C) -> Result<()>,
) -> ExitCode {
    // First: a crash from here on leaves no core (see crate::core_dump).
    let core_warnings = crate::core_dump::prevent();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let lossy: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match Flag::parse(&lossy) {
        Ok(None) => {}
        Err(_) if takes_args => {}
        Ok(Some(Flag::Help)) => {
            print!("{}", help(program));
            return ExitCode::SUCCESS;
        }
        Ok(Some(Flag::Version)) => {
            println!("{} {}", program.name(), env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("{}: {why}", program.name());
            eprintln!("{}", usage(program));
            return ExitCode::from(2);
        }
    }
    let env = Env::from_process();
    let termination_path = config::termination_message_path(&env);
    // The final error line, in the log and where the kubelet reads it.
    let fail = |msg: String| {
        log::error(&msg);
        termination::write(&termination_path, &log::one_line(&msg));
        ExitCode::FAILURE
    };
    let format = match config::log_format(&env) {
        Ok(f) => f,
        Err(e) => return fail(format!("configuration error: {e}")),
    };
    log::init(format);
    for warning in core_warnings {
        log::warn(warning);
    }
    let cfg = match parse(&env, &args) {
        Ok(cfg) => cfg,
        Err(e) => return fail(format!("configuration error: {e}")),
    };
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        // Asked to stop while waiting to retry: a normal end.
        Err(crate::Error::Interrupted) => {
            log::info("signal received - stop execution");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable the configuration reads is in some program's
    /// `--help` (the sources' string literals, their tests left out).
    #[test]
    fn help_lists_every_variable_the_configuration_reads() {
        let sources = [
            include_str!("config/mod.rs"),
            include_str!("config/vault.rs"),
            include_str!("config/login.rs"),
            include_str!("config/authenticator.rs"),
            include_str!("config/synchronizer.rs"),
            include_str!("config/renewer.rs"),
            include_str!("config/kube.rs"),
            include_str!("config/events.rs"),
            include_str!("config/env.rs"),
        ];
        let all: String = [
            Program::Authenticator,
            Program::Synchronizer,
            Program::TokenRenewer,
            Program::Env,
        ]
        .into_iter()
        .map(help)
        .collect();
        let listed: std::collections::BTreeSet<&str> = all
            .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .collect();
        // Boolean spellings, and variables that are refused by name.
        let not_settings = [
            "TRUE",
            "FALSE",
            "VAULT_MFA",
            "VAULT_SRV_LOOKUP",
            "VAULT_WRAP_TTL",
        ];
        let mut missing = Vec::new();
        for src in sources {
            let code = src.split("#[cfg(test)]").next().unwrap_or_default();
            for quoted in code.split('"').skip(1).step_by(2) {
                let is_name = quoted.len() > 2
                    && quoted.starts_with(|c: char| c.is_ascii_uppercase())
                    && quoted
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if is_name && !not_settings.contains(&quoted) && !listed.contains(quoted) {
                    missing.push(quoted);
                }
            }
        }
        assert!(missing.is_empty(), "not in any --help: {missing:?}");
    }

    fn parse(args: &[&str]) -> std::result::Result<Option<Flag>, String> {
        Flag::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn only_a_lone_help_or_version_flag_is_accepted() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["--help"]), Ok(Some(Flag::Help)));
        assert_eq!(parse(&["-h"]), Ok(Some(Flag::Help)));
        assert_eq!(parse(&["--version"]), Ok(Some(Flag::Version)));
        assert_eq!(parse(&["-V"]), Ok(Some(Flag::Version)));
        for bad in [
            &["help"][..],
            &["version"],
            &["--help", "extra"],
            &["-h", "-V"],
            &["-v"],
            &[""],
            &["--"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("unexpected arguments"), "{bad:?}: {e}");
        }
    }
}

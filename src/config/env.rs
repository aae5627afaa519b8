//! Settings of vault-kubernetes-env: the command to run (after `--`) or
//! the directory to install into (`--install DIR`), which variables are
//! Vault references, the secrets whose every key becomes a variable
//! (`VAULT_ENV_FROM_PATH`), and where the token comes from. Everything is
//! parsed here, before any I/O; docs/env.md is the user's account.
//!
//! The reference syntax is bank-vaults' `vault-env`'s,
//! `vault:<path>#<key>[#<version>]`, so manifests written for it keep their
//! values.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::{Env, LoginSettings, VaultSettings};
use crate::error::{Error, Result};

/// The name the binary is installed under by `--install DIR`.
pub const INSTALL_NAME: &str = "vault-kubernetes-env";

/// Variables that carry the wrapper's credentials: never handed to the app.
/// `VAULT_HEADERS` is here because extra request headers often hold a
/// proxy's credentials. `VAULT_TOKEN=vault:login` asks for the token to be
/// handed on instead (bank-vaults' syntax), see [`ExecConfig::keep_token`].
pub const CREDENTIAL_VARIABLES: &[&str] = &[
    "VAULT_TOKEN",
    "VAULT_SECRET_ID",
    "VAULT_ROLE_ID",
    "VAULT_HEADERS",
];

/// The value of `VAULT_TOKEN` that keeps the wrapper's token for the app.
pub const KEEP_TOKEN: &str = "vault:login";

const USAGE: &str =
    "usage: vault-kubernetes-env -- COMMAND [ARG...]  or  vault-kubernetes-env --install DIR";

/// What the program is asked to do.
#[derive(Clone, Debug)]
pub enum EnvConfig {
    /// `--install DIR`: copy the binary to `DIR/vault-kubernetes-env`.
    Install { dir: PathBuf },
    /// `-- COMMAND [ARG...]`: resolve the references, then exec.
    Exec(Box<ExecConfig>),
}

/// One secret to read: a Vault path, and a KV v2 version (`None`: the latest).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// Without a leading `/`; either the API path (`secret/data/k8s/db`)
    /// or the path inside the mount (`secret/k8s/db`), as in `VAULT_SECRETS`.
    pub path: String,
    pub version: Option<u64>,
}

/// A variable whose value is `vault:<path>#<key>[#<version>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub variable: String,
    /// The value as written, for messages (a reference is not a secret).
    pub raw: String,
    pub secret: SecretRef,
    pub key: String,
}

/// An entry of `VAULT_ENV_FROM_PATH`: `<path>[#<version>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromPath {
    pub raw: String,
    pub secret: SecretRef,
}

#[derive(Clone, Debug)]
pub struct ExecConfig {
    pub vault: VaultSettings,
    /// `VAULT_TOKEN_PATH`: used when the file exists; never revoked.
    pub token_path: Option<PathBuf>,
    /// Present when `VAULT_ROLE`, `VAULT_ROLE_ID` or `VAULT_SECRET_ID` is
    /// set: how to log in when there is no token file.
    pub login: Option<LoginSettings>,
    /// `ALLOW_FAIL`: a login or a reference that fails leaves the variable
    /// out and the app starts anyway. Defaults to false.
    pub allow_fail: bool,
    /// `VAULT_TOKEN=vault:login`: the token is not revoked and the app
    /// receives it as `VAULT_TOKEN`.
    pub keep_token: bool,
    pub references: Vec<Reference>,
    pub from_paths: Vec<FromPath>,
    /// The container's environment without [`CREDENTIAL_VARIABLES`]: what
    /// the app starts from.
    pub environment: Vec<(OsString, OsString)>,
    /// The command after `--`: at least the program.
    pub command: Vec<OsString>,
}

impl EnvConfig {
    /// From the environment and the arguments after the program's name.
    pub fn from_env_and_args(env: &Env, args: &[OsString]) -> Result<Self> {
        match args.first().and_then(|a| a.to_str()) {
            Some("--install") => match &args[1..] {
                [dir] if !dir.is_empty() => Ok(EnvConfig::Install {
                    dir: PathBuf::from(dir),
                }),
                _ => Err(Error::Other(format!(
                    "--install takes one directory; {USAGE}"
                ))),
            },
            Some("--") if args.len() > 1 && !args[1].is_empty() => Ok(EnvConfig::Exec(Box::new(
                ExecConfig::from_env(env, args[1..].to_vec())?,
            ))),
            Some("--") => Err(Error::Other(format!("no command after --; {USAGE}"))),
            _ => Err(Error::Other(format!(
                "expected -- before the command; {USAGE}"
            ))),
        }
    }
}

impl ExecConfig {
    pub fn from_env(env: &Env, command: Vec<OsString>) -> Result<Self> {
        let mut references = Vec::new();
        let mut keep_token = false;
        let mut environment = Vec::new();
        for (name, value) in env.raw() {
            let credential = name
                .to_str()
                .is_some_and(|n| CREDENTIAL_VARIABLES.contains(&n));
            if credential {
                keep_token |= name == "VAULT_TOKEN" && value == KEEP_TOKEN;
                continue;
            }
            if let Some(r) = reference(name, value)? {
                references.push(r);
            }
            environment.push((name.clone(), value.clone()));
        }
        let from_paths = match env.get("VAULT_ENV_FROM_PATH") {
            None => Vec::new(),
            Some(v) => from_paths(v)?,
        };
        let token_path = env.string("VAULT_TOKEN_PATH").map(PathBuf::from);
        let login = ["VAULT_ROLE", "VAULT_ROLE_ID", "VAULT_SECRET_ID"]
            .iter()
            .any(|v| env.get(v).is_some())
            .then(|| LoginSettings::from_env(env))
            .transpose()?;
        let needs_vault = !references.is_empty() || !from_paths.is_empty() || keep_token;
        if needs_vault && token_path.is_none() && login.is_none() {
            return Err(Error::config(
                "VAULT_ROLE",
                "missing: the Vault references need a token; set VAULT_ROLE to log in, or VAULT_TOKEN_PATH to a token file",
            ));
        }
        let mut vault = VaultSettings::from_env(env)?;
        if keep_token {
            // VaultSettings warns of any VAULT_TOKEN; this one is an instruction.
            vault.warnings.retain(|w| !w.starts_with("VAULT_TOKEN "));
        }
        Ok(ExecConfig {
            vault,
            token_path,
            login,
            allow_fail: env.bool("ALLOW_FAIL", false)?,
            keep_token,
            references,
            from_paths,
            environment,
            command,
        })
    }

    /// Whether Vault has anything to do: otherwise the command runs at once.
    pub fn needs_vault(&self) -> bool {
        !self.references.is_empty() || !self.from_paths.is_empty() || self.keep_token
    }
}

/// The reference in `name`'s value, if it is one. A value starting with
/// `vault:` that is not a valid reference is an error naming the variable
/// but not showing the value (it might be a password that merely starts
/// so); Vault transit ciphertext (`vault:v1:...`, no `#`) is not a
/// reference and stays as it is.
fn reference(name: &OsStr, value: &OsStr) -> Result<Option<Reference>> {
    let bytes = value.as_encoded_bytes();
    let var = name.to_string_lossy();
    let refuse = |why: &str| Err(Error::config(&var, format!("{why} (value not shown)")));
    if bytes.starts_with(b">>vault:") {
        return refuse("bank-vaults' >>vault: (a write to Vault at every start) is not supported");
    }
    if bytes.windows(8).any(|w| w == b"${vault:") {
        return refuse("bank-vaults' inline ${vault:...} templates are not supported; make the whole value one vault:<path>#<key> reference");
    }
    if !bytes.starts_with(b"vault:") {
        return Ok(None);
    }
    let Some(rest) = value.to_str().and_then(|v| v.strip_prefix("vault:")) else {
        return refuse("starts with vault: but is not UTF-8, so not a reference");
    };
    if is_transit_ciphertext(rest) {
        return Ok(None);
    }
    let bad = |why: &str| {
        refuse(&format!(
            "starts with vault: but is not a reference vault:<path>#<key>[#<version>]: {why}"
        ))
    };
    let mut parts = rest.splitn(3, '#');
    let path = parts.next().unwrap_or_default();
    let Some(key) = parts.next() else {
        return bad("no #<key>");
    };
    if key.is_empty() {
        return bad("empty key");
    }
    if key.contains("{{") {
        return bad("templates in the key are not supported");
    }
    let version = match parts.next().map(parse_version) {
        None => None,
        Some(Some(v)) => Some(v),
        Some(None) => return bad("the version after the second # is not a number"),
    };
    let Some(path) = clean_path(path) else {
        return bad("empty path, or a path with an empty, . or .. segment or a trailing /");
    };
    Ok(Some(Reference {
        variable: var.into_owned(),
        raw: value.to_string_lossy().into_owned(),
        secret: SecretRef { path, version },
        key: key.to_string(),
    }))
}

/// `v<digits>:<no #>`: what Vault's transit engine returns as ciphertext.
fn is_transit_ciphertext(rest: &str) -> bool {
    let Some(after_v) = rest.strip_prefix('v') else {
        return false;
    };
    let digits = after_v.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && after_v[digits..].starts_with(':') && !rest.contains('#')
}

/// Digits only, as Vault's `version` parameter (0 is the latest).
fn parse_version(v: &str) -> Option<u64> {
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
}

/// The path without a leading `/`; `None` when empty, a folder (trailing
/// `/`), or with an empty, `.` or `..` segment.
fn clean_path(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let ok = !path.is_empty()
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    ok.then(|| path.to_string())
}

/// `VAULT_ENV_FROM_PATH`: comma-separated `<path>[#<version>]`, trimmed,
/// empty entries skipped; a path listed twice is refused (its keys would
/// collide).
fn from_paths(value: &str) -> Result<Vec<FromPath>> {
    const VAR: &str = "VAULT_ENV_FROM_PATH";
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (path, version) = match raw.split_once('#') {
            None => (raw, None),
            Some((p, v)) => (
                p,
                Some(parse_version(v).ok_or_else(|| {
                    Error::config(
                        VAR,
                        format!("entry {raw:?}: the version after # is not a number"),
                    )
                })?),
            ),
        };
        let path = clean_path(path).ok_or_else(|| {
            Error::config(
                VAR,
                format!("entry {raw:?}: expected <path>[#<version>], e.g. secret/data/k8s/db"),
            )
        })?;
        if !seen.insert(path.clone()) {
            return Err(Error::config(
                VAR,
                format!("{path} is listed twice: its keys would collide"),
            ));
        }
        out.push(FromPath {
            raw: raw.to_string(),
            secret: SecretRef { path, version },
        });
    }
    Ok(out)
}

/// A POSIX shell variable name, `[A-Za-z_][A-Za-z0-9_]*`: what a key of a
/// `VAULT_ENV_FROM_PATH` secret must be to become a variable the app (and
/// any shell it starts) can read.
pub fn is_variable_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pairs: &[(&str, &str)]) -> Result<ExecConfig> {
        ExecConfig::from_env(&Env::from_pairs(pairs.iter().copied()), vec!["/app".into()])
    }

    fn one(value: &str) -> Result<Option<Reference>> {
        reference(OsStr::new("DB_PASSWORD"), OsStr::new(value))
    }

    #[test]
    fn references_take_vault_env_syntax() {
        let r = one("vault:secret/data/k8s/db#password").unwrap().unwrap();
        assert_eq!(
            (r.secret.path.as_str(), r.secret.version, r.key.as_str()),
            ("secret/data/k8s/db", None, "password")
        );
        let r = one("vault:/secret/k8s/db#pass word#3").unwrap().unwrap();
        assert_eq!(
            (r.secret.path.as_str(), r.secret.version, r.key.as_str()),
            ("secret/k8s/db", Some(3), "pass word")
        );
        // Not references: left as they are.
        for plain in [
            "",
            "secret",
            "myvault:x#y",
            " vault:secret/x#y",
            "VAULT:secret/x#y",
        ] {
            assert_eq!(one(plain).unwrap(), None, "{plain}");
        }
        // Transit ciphertext is data for the app.
        assert_eq!(one("vault:v1:AbC+/dEf==").unwrap(), None);
        assert!(one("vault:v1:x#key").unwrap().is_some());
    }

    #[test]
    fn malformed_references_name_the_variable_never_the_value() {
        for (bad, why) in [
            ("vault:secret/data/hunter2", "no #<key>"),
            ("vault:secret/data/hunter2#", "empty key"),
            ("vault:#hunter2", "empty path"),
            ("vault:secret/../hunter2#k", "segment"),
            ("vault:secret/hunter2/#k", "trailing /"),
            ("vault:secret/hunter2#k#latest", "not a number"),
            ("vault:secret/hunter2#k#-1", "not a number"),
            ("vault:secret/hunter2#{{ .k }}", "templates"),
            (">>vault:database/hunter2#k", ">>vault:"),
            ("postgres://${vault:secret/hunter2#k}@db", "inline"),
        ] {
            let err = one(bad).unwrap_err().to_string();
            assert!(err.starts_with("DB_PASSWORD: "), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_are_left_out_and_vault_login_keeps_the_token() {
        let cfg = exec(&[
            ("VAULT_ROLE", "app"),
            ("VAULT_TOKEN", "hvs.x"),
            ("VAULT_HEADERS", r#"{"Proxy-Authorization":"x"}"#),
            ("DB", "vault:secret/k8s/db#password"),
            ("PLAIN", "1"),
        ])
        .unwrap();
        let names: Vec<_> = cfg.environment.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(names, ["VAULT_ROLE", "DB", "PLAIN"]);
        assert!(!cfg.keep_token);
        assert_eq!(cfg.references.len(), 1);
        assert!(cfg.login.is_some() && cfg.token_path.is_none());
        let cfg = exec(&[("VAULT_ROLE", "app"), ("VAULT_TOKEN", "vault:login")]).unwrap();
        assert!(cfg.keep_token && cfg.needs_vault());
        assert!(cfg.vault.warnings.is_empty(), "{:?}", cfg.vault.warnings);
        // AppRole's secret id is a credential too, and a reference there is not resolved.
        let cfg = exec(&[
            ("VAULT_ROLE_ID", "r"),
            ("VAULT_SECRET_ID", "vault:secret/x#y"),
        ])
        .unwrap();
        assert!(cfg.environment.is_empty() && cfg.references.is_empty());
    }

    #[test]
    fn references_need_a_token_source() {
        let err = exec(&[("DB", "vault:secret/k8s/db#password")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("VAULT_ROLE: missing"), "{err}");
        let cfg = exec(&[
            ("DB", "vault:secret/k8s/db#password"),
            ("VAULT_TOKEN_PATH", "/t/token"),
        ])
        .unwrap();
        assert!(cfg.login.is_none() && cfg.token_path.is_some());
        // Nothing to resolve: nothing needed.
        assert!(!exec(&[("A", "b")]).unwrap().needs_vault());
    }

    #[test]
    fn from_path_entries() {
        let got = from_paths(" secret/data/a , ,secret/b#2").unwrap();
        assert_eq!(
            got.iter().map(|f| f.secret.clone()).collect::<Vec<_>>(),
            [
                SecretRef {
                    path: "secret/data/a".into(),
                    version: None
                },
                SecretRef {
                    path: "secret/b".into(),
                    version: Some(2)
                }
            ]
        );
        for bad in ["secret/a,secret/a", "secret/a#x", "/", "secret//a"] {
            let err = from_paths(bad).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_ENV_FROM_PATH: "), "{bad}: {err}");
        }
    }

    #[test]
    fn arguments() {
        let env = Env::from_pairs([]);
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        match EnvConfig::from_env_and_args(&env, &args(&["--install", "/d"])).unwrap() {
            EnvConfig::Install { dir } => assert_eq!(dir, PathBuf::from("/d")),
            other => panic!("{other:?}"),
        }
        match EnvConfig::from_env_and_args(&env, &args(&["--", "sh", "-c", "x"])).unwrap() {
            EnvConfig::Exec(e) => assert_eq!(e.command, args(&["sh", "-c", "x"])),
            other => panic!("{other:?}"),
        }
        for bad in [
            &[][..],
            &["sh"],
            &["--"],
            &["--install"],
            &["--install", "a", "b"],
        ] {
            let err = EnvConfig::from_env_and_args(&env, &args(bad)).unwrap_err();
            assert!(err.to_string().contains("usage:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn variable_names() {
        for ok in ["A", "_x", "DB_PASSWORD_2"] {
            assert!(is_variable_name(ok), "{ok}");
        }
        for bad in ["", "2A", "A-B", "A.B", "A B", "é"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }
}

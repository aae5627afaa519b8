//! vault-kubernetes-env: resolve the Vault references of the environment,
//! then `execve` the app, which becomes this process (same PID, its
//! signals, nothing of ours left running). docs/env.md is the user's
//! account; the syntax is parsed in [`crate::config::env`].
//!
//! Order: a token (the file's, or a login of our own), every secret read
//! once, every reference checked, then the token we logged in with revoked,
//! and only then the exec. A reference that cannot be resolved stops
//! everything before the exec unless `ALLOW_FAIL`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::env::{is_variable_name, SecretRef, CREDENTIAL_VARIABLES, INSTALL_NAME};
use crate::config::{EnvConfig, ExecConfig};
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::signals::Shutdown;
// The synchronizer's small pool of scoped threads, for the reads.
use crate::parallel::parallel;
use crate::vault::kv::Mount;
use crate::vault::{kv, KvMount, VaultClient};
use crate::{fs, log, signals, token_file};

/// How long the revocation of our token may take before the app starts
/// anyway (the token then lives out its TTL).
const REVOKE_WITHIN: Duration = Duration::from_secs(2);

/// How long a login already sent when SIGTERM comes may still take: a
/// login answers in milliseconds, and the wrapper must stop within a
/// second (it is the container's PID 1, its app not yet started).
const LOGIN_AFTER_SIGNAL: Duration = Duration::from_millis(500);

/// Runs the program: `--install DIR`, or resolve and exec. On success of
/// the exec this never returns.
pub fn run(cfg: &EnvConfig) -> Result<()> {
    match cfg {
        EnvConfig::Install { dir } => install(dir),
        EnvConfig::Exec(exec) => run_exec(exec),
    }
}

/// Copies the running binary into `dir` (mode 0555: any uid may run it),
/// for an init container filling a volume the app container runs it from.
fn install(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Other(format!(
            "--install: {} is not a directory (mount a volume there)",
            dir.display()
        )));
    }
    let dst = dir.join(INSTALL_NAME);
    fs::copy_atomic(Path::new("/proc/self/exe"), &dst, 0o555)?;
    log::info(format!("installed {}", dst.display()));
    Ok(())
}

fn run_exec(cfg: &ExecConfig) -> Result<()> {
    // SIGTERM while logging in or reading stops us at once (as PID 1 the
    // default action would ignore it); exec resets the handlers, so the
    // app gets its signals.
    let _shutdown = Shutdown::install()?;
    let (environment, handed) = if cfg.needs_vault() {
        environment(cfg)?
    } else {
        (cfg.environment.clone(), None)
    };
    // A signal that came after the last request: the app was asked to
    // stop before it started.
    if signals::received() {
        revoke_unused(handed);
        return Err(Error::Interrupted);
    }
    if let Some(name) = too_long(&environment) {
        revoke_unused(handed);
        return Err(Error::Other(format!(
            "app not started: {name}: the variable is over {MAX_ARG_STRLEN} bytes (name=value), more than Linux's execve takes for one string (value not shown)"
        )));
    }
    let program = &cfg.command[0];
    log::info(format!("starting {}", program.to_string_lossy()));
    // std's exec (execvp) rather than a bare execve: it also resets the
    // signal mask and SIGPIPE, which Rust's runtime ignores for itself and
    // which the app must get back with their defaults.
    // The app's cores are its own business (ours are off, see core_dump).
    crate::core_dump::restore_for_exec();
    let err = Command::new(program)
        .args(&cfg.command[1..])
        .env_clear()
        .envs(environment)
        .exec();
    let err = Error::Other(format!("cannot run {}: {err}", program.to_string_lossy()));
    revoke_unused(handed);
    Err(err)
}

/// Linux's limit on one string of `execve`'s environment, `name=value`
/// and its NUL included (`MAX_ARG_STRLEN`, 32 pages of 4 KiB): past it the
/// exec fails with E2BIG, which names no variable.
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The first variable `execve` would refuse as too long.
fn too_long(environment: &Environment) -> Option<String> {
    environment
        .iter()
        .find(|(k, v)| k.len() + 1 + v.len() + 1 > MAX_ARG_STRLEN)
        .map(|(k, _)| k.to_string_lossy().into_owned())
}

/// A token of our own login handed on to an app that never started
/// (`VAULT_TOKEN=vault:login`, then the exec failed or a signal came):
/// nobody holds it any more, so it is revoked like any token of ours.
fn revoke_unused(handed: Option<Handed>) {
    let Some(Handed { client, token }) = handed else {
        return;
    };
    match client.revoke_self(&token, REVOKE_WITHIN) {
        Ok(()) => log::info("the app did not start: revoked the token meant for it"),
        Err(e) => log::warn(format!(
            "the app did not start and the token meant for it could not be revoked, it expires at its TTL: {e}"
        )),
    }
}

/// The token of our own login handed to the app, and the client to revoke
/// it with should the app not start.
struct Handed {
    client: VaultClient,
    token: Secret,
}

/// The app's environment, name and value.
type Environment = Vec<(OsString, OsString)>;

/// A token and whether we logged in for it (then it is ours to revoke).
struct Token {
    secret: Secret,
    own: bool,
}

/// The app's environment: references replaced, whole secrets added,
/// credential variables left out (by the config), the token revoked or
/// handed on (with, when it was our own login's, what revokes it if the
/// app does not start).
fn environment(cfg: &ExecConfig) -> Result<(Environment, Option<Handed>)> {
    // A login in flight when SIGTERM comes is given LOGIN_AFTER_SIGNAL to
    // answer, rather than abandoned: Vault mints the token either way, and
    // only a token we know can be revoked.
    let client = VaultClient::new(&cfg.vault)?.finish_logins_after_signal(LOGIN_AFTER_SIGNAL);
    let token = match token(cfg, &client) {
        Ok(token) => token,
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(err) if cfg.allow_fail => {
            log::warn(format!(
                "{err} - ALLOW_FAIL is set therefore the app starts without the vault values"
            ));
            return Ok((assemble(cfg, &HashMap::new(), Vec::new(), None), None));
        }
        Err(err) => return Err(err),
    };
    let resolved = resolve(cfg, &client, &token.secret);
    if let Ok(r) = &resolved {
        log::info(format!(
            "resolved {} variables from {} vault secrets",
            r.values.len() + r.from_path.len(),
            r.secrets
        ));
    }
    // Kept only for an app that starts: a wrapper that stops revokes it.
    let hand_on = cfg.keep_token && resolved.is_ok();
    if token.own && !hand_on {
        match client.revoke_self(&token.secret, REVOKE_WITHIN) {
            Ok(()) => log::info("revoked the wrapper's token"),
            Err(e) => log::warn(format!(
                "could not revoke the wrapper's token, it expires at its TTL: {e}"
            )),
        }
    }
    let handed_on = hand_on.then(|| {
        log::info("VAULT_TOKEN=vault:login: the token is handed to the app as VAULT_TOKEN, not revoked; it expires at its TTL unless the app renews it");
        token.secret.clone()
    });
    let Resolved {
        values, from_path, ..
    } = resolved?;
    let env = assemble(cfg, &values, from_path, handed_on);
    let own = (hand_on && token.own).then_some(Handed {
        client,
        token: token.secret,
    });
    Ok((env, own))
}

/// The token file's token when there is one, else a login of our own.
fn token(cfg: &ExecConfig, client: &VaultClient) -> Result<Token> {
    if let Some(path) = &cfg.token_path {
        if let Some(secret) = token_file::read(path)? {
            return Ok(Token { secret, own: false });
        }
    }
    let Some(login) = &cfg.login else {
        let path = cfg.token_path.as_deref().unwrap_or(Path::new(""));
        // token_file::read gives no token for an empty file as for none.
        let state = if path.exists() {
            "is empty"
        } else {
            "does not exist"
        };
        return Err(Error::Other(format!(
            "no token: {} {state} (VAULT_TOKEN_PATH) and no login is configured (VAULT_ROLE)",
            path.display()
        )));
    };
    if let Some(path) = &cfg.token_path {
        log::info(format!("no token at {}: logging in", path.display()));
    }
    let auth = client
        .login(login)
        .map_err(|e| e.context("authentication failed"))?;
    log::info("successfully authenticated to vault");
    Ok(Token {
        secret: auth.client_token,
        own: true,
    })
}

/// What the references and `VAULT_ENV_FROM_PATH` gave.
struct Resolved {
    /// Variable to value.
    values: HashMap<String, Vec<u8>>,
    /// `VAULT_ENV_FROM_PATH` keys and values, in the listed order.
    from_path: Vec<(String, Vec<u8>)>,
    /// Distinct secrets read.
    secrets: usize,
}

/// Reads every secret once and checks every reference. Failures Vault
/// could answer differently later (not found, denied, unreachable) are
/// warnings with `ALLOW_FAIL`; mistakes in the configuration (a leased
/// path, a version on KV v1, a key that cannot be a variable) never are.
fn resolve(cfg: &ExecConfig, client: &VaultClient, token: &Secret) -> Result<Resolved> {
    let wanted: BTreeSet<&SecretRef> = cfg
        .references
        .iter()
        .map(|r| &r.secret)
        .chain(cfg.from_paths.iter().map(|f| &f.secret))
        .collect();
    // Each mount looked up once, then each secret read once however it is
    // spelled (`secret/data/x` and `secret/x` are one secret), the reads
    // in parallel: they are most of the time before the app starts.
    let mut mounts: Vec<Mount> = Vec::new();
    let mut located = BTreeMap::new();
    for secret in wanted {
        located.insert(secret, locate(client, token, secret, &mut mounts));
        if signals::received() {
            return Err(Error::Interrupted);
        }
    }
    let locations: Vec<Location> = located
        .values()
        .filter_map(|l| l.as_ref().ok().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let reads = parallel(&locations, |loc| read_secret(client, token, loc));
    if signals::received() {
        return Err(Error::Interrupted);
    }
    let data: BTreeMap<Location, _> = locations.into_iter().zip(reads).collect();
    let read = |secret: &SecretRef| match &located[secret] {
        Ok(loc) => data[loc].clone(),
        Err(failure) => Err(failure.clone()),
    };

    let mut fatal = Vec::new();
    let mut failed = Vec::new();
    let mut values = HashMap::new();
    for r in &cfg.references {
        let what = format!("{}: {}", r.variable, r.raw);
        let value = match read(&r.secret) {
            Err(failure) => Err(failure),
            Ok(data) => match data.get(&r.key) {
                None => Err(Failure::Retry(format!("key {:?} not found", r.key))),
                Some(v) => env_value(v).map_err(Failure::Retry),
            },
        };
        match value {
            Ok(v) => {
                values.insert(r.variable.clone(), v);
            }
            Err(Failure::Fatal(why)) => fatal.push(format!("{what}: {why}")),
            Err(Failure::Retry(why)) => {
                failed.push((r.variable.as_str(), format!("{what}: {why}")))
            }
        }
    }

    let mut from_path = Vec::new();
    // Names a whole secret may not take: the container's (credentials included).
    let mut taken: HashSet<String> = cfg
        .environment
        .iter()
        .filter_map(|(k, _)| k.to_str().map(str::to_string))
        .chain(CREDENTIAL_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    for entry in &cfg.from_paths {
        let what = format!("VAULT_ENV_FROM_PATH: {}", entry.raw);
        let data = match read(&entry.secret) {
            Ok(data) => data,
            Err(Failure::Fatal(why)) => {
                fatal.push(format!("{what}: {why}"));
                continue;
            }
            Err(Failure::Retry(why)) => {
                failed.push(("", format!("{what}: {why}")));
                continue;
            }
        };
        for (key, value) in &data {
            if !is_variable_name(key) {
                fatal.push(format!(
                    "{what}: key {key:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            } else if key.starts_with("LD_") {
                // The dynamic loader's variables (LD_PRELOAD,
                // LD_LIBRARY_PATH, ...) run code of the writer's choice in
                // the app: whoever may write a secret is trusted with its
                // values, not with the app's code. A pod author who wants
                // one names it with a reference.
                fatal.push(format!(
                    "{what}: key {key:?} is a dynamic loader variable (LD_*), which a whole secret may not set; use a reference"
                ));
            } else if !taken.insert(key.clone()) {
                fatal.push(format!(
                    "{what}: key {key:?} names a variable the container already has or another secret gives"
                ));
            } else {
                match env_value(value) {
                    Ok(v) => from_path.push((key.clone(), v)),
                    Err(why) => failed.push(("", format!("{what}: key {key:?}: {why}"))),
                }
            }
        }
    }

    if !fatal.is_empty() {
        let mut all = fatal;
        all.extend(failed.into_iter().map(|(_, line)| line));
        return Err(Error::Other(format!("app not started: {}", all.join("; "))));
    }
    if !failed.is_empty() {
        if !cfg.allow_fail {
            let lines: Vec<String> = failed.into_iter().map(|(_, line)| line).collect();
            return Err(Error::Other(format!(
                "app not started: {}",
                lines.join("; ")
            )));
        }
        for (variable, line) in &failed {
            let without = if variable.is_empty() {
                "those variables".to_string()
            } else {
                (*variable).to_string()
            };
            log::warn(format!(
                "{line} - ALLOW_FAIL is set therefore the app starts without {without}"
            ));
        }
    }
    Ok(Resolved {
        values,
        from_path,
        secrets: data.len(),
    })
}

/// Why a secret or a value is missing.
#[derive(Clone)]
enum Failure {
    /// The configuration is wrong: no retry or restart will fix it.
    Fatal(String),
    /// Vault's answer (or its absence): `ALLOW_FAIL` may start without it.
    Retry(String),
}

/// Where a secret is: its KV mount, the path inside it, the version
/// (`None` for the latest, as version 0 means in KV v2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Location {
    mount: String,
    kv_version: u8,
    rel: String,
    version: Option<u64>,
}

/// A secret's mount, refused unless KV: a read elsewhere may mint a leased
/// credential, so nothing is read from it. `known` holds the mounts found
/// so far: Vault refuses a mount inside another ("path is already in
/// use"), so a path under a known mount's path is in that mount, and one
/// lookup serves every secret of a mount.
fn locate(
    client: &VaultClient,
    token: &Secret,
    secret: &SecretRef,
    known: &mut Vec<Mount>,
) -> Result<Location, Failure> {
    let found = known
        .iter()
        .find(|m| !m.path.is_empty() && secret.path.starts_with(&m.path))
        .cloned();
    let mount = match found {
        Some(m) => m,
        None => {
            let m = client
                .mount(token, &secret.path)
                .map_err(|e| Failure::Retry(e.to_string()))?;
            known.push(m.clone());
            m
        }
    };
    if !mount.is_kv() {
        return Err(Failure::Fatal(format!(
            "{} is a {:?} mount, not KV: leased secrets are not supported by vault-kubernetes-env (its token is revoked before the exec, and with it their lease; see docs/env.md)",
            mount.path, mount.kind
        )));
    }
    if mount.kv_version != 2 && secret.version.is_some() {
        return Err(Failure::Fatal(format!(
            "{} is a KV v1 mount, which keeps no versions",
            mount.path
        )));
    }
    let kv = mount.kv();
    Ok(Location {
        rel: kv.relative(&secret.path).to_string(),
        mount: kv.path,
        kv_version: kv.version,
        version: secret.version.filter(|v| *v > 0),
    })
}

fn read_secret(
    client: &VaultClient,
    token: &Secret,
    loc: &Location,
) -> Result<Map<String, Value>, Failure> {
    let kv = KvMount {
        path: loc.mount.clone(),
        version: loc.kv_version,
    };
    match client.kv_read_version(token, &kv, &loc.rel, loc.version) {
        Ok(Some(data)) => Ok(data),
        Ok(None) => Err(Failure::Retry(match loc.version {
            Some(v) => format!("secret not found (or version {v} is deleted or destroyed)"),
            None => "secret not found (or its latest version is deleted or destroyed)".to_string(),
        })),
        Err(e) => Err(Failure::Retry(e.to_string())),
    }
}

/// A value as the bytes of an environment variable: [`kv::value_bytes`],
/// and no NUL, which `execve` cannot carry.
fn env_value(value: &Value) -> Result<Vec<u8>, String> {
    let bytes = kv::value_bytes(value).map_err(str::to_string)?;
    if bytes.contains(&0) {
        return Err("the value holds a NUL byte, which an environment variable cannot".into());
    }
    Ok(bytes)
}

/// The container's environment (credentials already left out) with each
/// reference replaced by its value, or left out when it has none (only
/// with `ALLOW_FAIL`), then the whole secrets' keys, then `VAULT_TOKEN`
/// when handed on.
fn assemble(
    cfg: &ExecConfig,
    values: &HashMap<String, Vec<u8>>,
    from_path: Vec<(String, Vec<u8>)>,
    token: Option<Secret>,
) -> Vec<(OsString, OsString)> {
    let references: HashSet<&str> = cfg.references.iter().map(|r| r.variable.as_str()).collect();
    let mut out = Vec::with_capacity(cfg.environment.len() + from_path.len() + 1);
    for (name, value) in &cfg.environment {
        match name.to_str() {
            Some(n) if references.contains(n) => {
                if let Some(v) = values.get(n) {
                    out.push((name.clone(), OsString::from_vec(v.clone())));
                }
            }
            _ => out.push((name.clone(), value.clone())),
        }
    }
    for (name, value) in from_path {
        out.push((name.into(), OsString::from_vec(value)));
    }
    if let Some(token) = token {
        out.push(("VAULT_TOKEN".into(), token.expose().into()));
    }
    out
}

//! Configuration from the environment: the only module that reads
//! `std::env`. Everything is parsed and checked here, before any I/O, into
//! typed settings; a bad value becomes an error naming the variable (and the
//! value, unless it is a secret).
//!
//! Names, defaults and syntax (Go booleans and durations) are those of the
//! Go tools, so manifests keep working when the image is swapped.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::{self, Entry};
use crate::url::{self, Url};

pub const DEFAULT_VAULT_ADDR: &str = "https://127.0.0.1:8200";
pub const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const DEFAULT_ANNOTATION: &str = "vault-secret";

/// A snapshot of the environment. Empty values count as unset, as
/// `os.Getenv(...) != ""` did in the Go tools, and so do values of only
/// whitespace (a `VAULT_ROLE="   "` is a missing role, not an empty one).
#[derive(Clone, Debug, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    // The one place the environment is read (clippy.toml forbids it elsewhere).
    #[allow(clippy::disallowed_methods)]
    pub fn from_process() -> Self {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.trim().to_string())
    }

    fn required(&self, name: &str) -> Result<String> {
        self.string(name)
            .ok_or_else(|| Error::config(name, "missing, it is required"))
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool> {
        self.get(name).map_or(Ok(default), |v| {
            parse_bool(v.trim()).ok_or_else(|| {
                Error::config(
                    name,
                    format!("invalid boolean {v:?}, expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"),
                )
            })
        })
    }

    fn duration(&self, name: &str, default: Duration) -> Result<Duration> {
        self.get(name).map_or(Ok(default), |v| {
            parse_duration(v.trim()).map_err(|e| Error::config(name, e))
        })
    }
}

/// A value that must never reach a log line; `Debug` and `Display` print
/// `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The longest duration Go can represent (`math.MaxInt64` nanoseconds,
/// about 292 years): the bound of every duration variable, with or without
/// a unit, so no deadline computed from one can overflow.
pub const MAX_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

/// Go's `time.ParseDuration` (`1h30m`, `1.5h`, `300ms`), plus a bare number
/// of seconds (`30`) as Vault's own parser accepts. Negative is refused, and
/// so is anything above [`MAX_DURATION`], as Go refuses it.
pub fn parse_duration(v: &str) -> std::result::Result<Duration, String> {
    let bad =
        || format!("invalid duration {v:?}, expected e.g. 30s, 5m, 1h30m or a number of seconds");
    let too_long = || format!("duration {v:?} too long, at most 2562047h47m16s");
    if v.is_empty() {
        return Err(bad());
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return match v.parse::<u64>() {
            Ok(secs) if secs <= MAX_DURATION.as_secs() => Ok(Duration::from_secs(secs)),
            _ => Err(too_long()),
        };
    }
    // Whole nanoseconds in u128, as Go sums them in int64: exact, and no
    // input can overflow before the bound is checked.
    let mut rest = v.strip_prefix('+').unwrap_or(v);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (whole, frac) = rest[..num_len]
            .split_once('.')
            .unwrap_or((&rest[..num_len], ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        // More than 30 digits is past any bound; stop before u128 overflows.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 30 {
            return Err(too_long());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        // Fractions below a nanosecond are dropped, as Go does.
        let mut frac_ns: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac.bytes().take(18) {
            frac_ns = frac_ns * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = whole
            .checked_mul(unit)
            .and_then(|n| n.checked_add(frac_ns * unit / scale))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(too_long)?;
    }
    let max = MAX_DURATION.as_nanos();
    if total > max {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Where the TLS trust and identity come from.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<String>,
    pub ca_dir: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Certificate verification off: for development only, logged at start.
    pub skip_verify: bool,
    /// Name to verify the server certificate against (and send as SNI).
    pub server_name: Option<String>,
}

/// How to reach Vault.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    /// `VAULT_ADDR` without a trailing slash.
    pub addr: String,
    pub tls: TlsSettings,
    pub namespace: Option<String>,
    /// Per request. Defaults to 60 s, as Vault's Go client.
    pub timeout: Duration,
    /// Retries of transient failures for ordinary calls. Defaults to 2.
    pub max_retries: u32,
    pub proxy: Option<String>,
    /// Extra headers from `VAULT_HEADERS`.
    pub headers: Vec<(String, String)>,
    /// Client-side limit of requests to Vault (`VAULT_RATE_LIMIT`).
    pub rate_limit: Option<RateLimit>,
    /// `VAULT_DISABLE_REDIRECTS`: a 3xx answer is an error instead of being
    /// followed once.
    pub disable_redirects: bool,
    /// Lines to log at start: variables read but not used, and why.
    pub warnings: Vec<String>,
}

/// `VAULT_RATE_LIMIT=rate[:burst]`: a token bucket of `burst` requests
/// refilled at `per_second`, as the Go client's `rate.Limiter`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests per second, > 0.
    pub per_second: f64,
    /// Requests that may go at once; at least 1.
    pub burst: u32,
}

/// Variables of Vault's Go client that we do not implement: each stops the
/// program at start with the reason, rather than being silently ignored.
const REFUSED: &[(&str, &str)] = &[
    (
        "VAULT_SRV_LOOKUP",
        "not supported: DNS SRV lookup of the Vault port; put the port in VAULT_ADDR",
    ),
    (
        "VAULT_WRAP_TTL",
        "not supported: it response-wraps every answer, the login too, so no token could be read (the Go images failed the same way)",
    ),
    (
        "VAULT_MFA",
        "not supported: Vault Enterprise login MFA credentials; use an auth role without MFA",
    ),
];

/// `rate[:burst]` as the Go client parses it; burst defaults to the rate
/// (at least 1: Go's limiter refused every request when it was 0).
pub fn parse_rate_limit(v: &str) -> std::result::Result<RateLimit, String> {
    let bad = || {
        format!("invalid rate limit {v:?}, expected requests per second as rate or rate:burst, e.g. 10 or 10:20")
    };
    let (rate, burst) = match v.split_once(':') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (v.trim(), None),
    };
    let per_second: f64 = rate.parse().map_err(|_| bad())?;
    if !per_second.is_finite() || per_second <= 0.0 {
        return Err(bad());
    }
    let burst = match burst {
        Some(b) => b.parse::<u32>().map_err(|_| bad())?,
        None => per_second.min(f64::from(u32::MAX)) as u32,
    };
    Ok(RateLimit {
        per_second,
        burst: burst.max(1),
    })
}

impl VaultSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        for (name, why) in REFUSED {
            if env.get(name).is_some() {
                return Err(Error::config(name, *why));
            }
        }
        let mut warnings = Vec::new();
        if env.get("VAULT_TOKEN").is_some() {
            warnings.push(
                "VAULT_TOKEN is set but not used: the token always comes from VAULT_TOKEN_PATH"
                    .to_string(),
            );
        }
        // As Vault's Go client: VAULT_AGENT_ADDR, when set, wins.
        let (addr_var, addr) = match env.string("VAULT_AGENT_ADDR") {
            Some(agent) => ("VAULT_AGENT_ADDR", agent),
            None => (
                "VAULT_ADDR",
                env.string("VAULT_ADDR")
                    .unwrap_or_else(|| DEFAULT_VAULT_ADDR.to_string()),
            ),
        };
        // A socket has no host, and no proxy can reach it.
        let url = match crate::unix_socket::socket_path(&addr) {
            Some(_) => None,
            None => Some(Url::parse(&addr, &["http", "https"]).map_err(|why| {
                Error::config(
                    addr_var,
                    format!(
                        "invalid address {:?}: {why}; expected http://host:port, https://host:port or unix:///path/to.sock",
                        url::redact(&addr)
                    ),
                )
            })?),
        };
        let addr = url.as_ref().map_or(addr, Url::expose);

        let client_cert = env.string("VAULT_CLIENT_CERT").map(PathBuf::from);
        let client_key = env.string("VAULT_CLIENT_KEY").map(PathBuf::from);
        if client_cert.is_some() != client_key.is_some() {
            let missing = if client_cert.is_some() {
                "VAULT_CLIENT_KEY"
            } else {
                "VAULT_CLIENT_CERT"
            };
            return Err(Error::config(
                missing,
                "missing: both client cert and client key must be provided",
            ));
        }
        let tls = TlsSettings {
            ca_file: env.string("VAULT_CACERT").map(PathBuf::from),
            ca_pem: env.get("VAULT_CACERT_BYTES").map(str::to_string),
            ca_dir: env.string("VAULT_CAPATH").map(PathBuf::from),
            client_cert,
            client_key,
            skip_verify: env.bool("VAULT_SKIP_VERIFY", false)?,
            server_name: env
                .string("VAULT_TLS_SERVER_NAME")
                .map(|v| {
                    url::parse_bare_host(&v).map_err(|e| Error::config("VAULT_TLS_SERVER_NAME", e))
                })
                .transpose()?,
        };

        let max_retries = match env.get("VAULT_MAX_RETRIES") {
            None => 2,
            // Go's strconv.ParseUint(v, 10, 32), as Vault's client: digits only.
            Some(v) => Some(v.trim())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| {
                    Error::config(
                        "VAULT_MAX_RETRIES",
                        format!("invalid number {v:?}, expected a count such as 2"),
                    )
                })?,
        };

        let headers = match env.get("VAULT_HEADERS") {
            None => Vec::new(),
            Some(v) => parse_headers(v)?,
        };

        Ok(VaultSettings {
            tls,
            namespace: env.string("VAULT_NAMESPACE"),
            timeout: env.duration("VAULT_CLIENT_TIMEOUT", Duration::from_secs(60))?,
            max_retries,
            proxy: match &url {
                Some(url) => proxy_for(env, url)?,
                None => None,
            },
            headers,
            rate_limit: env
                .get("VAULT_RATE_LIMIT")
                .map(|v| parse_rate_limit(v).map_err(|e| Error::config("VAULT_RATE_LIMIT", e)))
                .transpose()?,
            disable_redirects: env.bool("VAULT_DISABLE_REDIRECTS", false)?,
            warnings,
            addr,
        })
    }
}

fn parse_headers(v: &str) -> Result<Vec<(String, String)>> {
    let var = "VAULT_HEADERS";
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(v)
        .map_err(|e| Error::config(var, format!("expected a JSON object of strings: {e}")))?;
    let mut headers = Vec::new();
    for (k, v) in map {
        if k.to_ascii_lowercase().starts_with("x-vault-") {
            return Err(Error::config(
                var,
                format!("header {k:?} not allowed: X-Vault-* headers are set by the client"),
            ));
        }
        let serde_json::Value::String(v) = v else {
            return Err(Error::config(
                var,
                format!("header {k:?} must have a string value"),
            ));
        };
        headers.push((k, v));
    }
    Ok(headers)
}

/// `VAULT_HTTP_PROXY`/`VAULT_PROXY_ADDR` win (always used, as Vault's Go
/// client does); otherwise `HTTPS_PROXY`/`HTTP_PROXY` (either case) by the
/// address's scheme, unless Go's rules send the request directly
/// ([`url::bypasses_proxy`]: loopback, or a `NO_PROXY` match).
fn proxy_for(env: &Env, vault: &Url) -> Result<Option<String>> {
    let explicit = ["VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR"]
        .into_iter()
        .find_map(|name| env.string(name).map(|v| (name, v)));
    let (name, value) = match explicit {
        Some(found) => found,
        None => {
            let names: &[&str] = if vault.scheme == "https" {
                &["HTTPS_PROXY", "https_proxy"]
            } else {
                &["HTTP_PROXY", "http_proxy"]
            };
            let Some(found) = names
                .iter()
                .find_map(|name| env.string(name).map(|v| (*name, v)))
            else {
                return Ok(None);
            };
            let no_proxy = env
                .string("NO_PROXY")
                .or_else(|| env.string("no_proxy"))
                .unwrap_or_default();
            if url::bypasses_proxy(&no_proxy, &vault.host, vault.port_or_default()) {
                return Ok(None);
            }
            found
        }
    };
    // Go reads a proxy without a scheme as http://.
    let value = if value.contains("://") {
        value
    } else {
        format!("http://{value}")
    };
    let proxy = Url::parse(&value, &["http", "https"]).map_err(|why| {
        Error::config(
            name,
            format!("invalid proxy address {:?}: {why}", url::redact(&value)),
        )
    })?;
    Ok(Some(proxy.expose()))
}

/// How to log in to Vault.
#[derive(Clone, Debug)]
pub enum LoginMethod {
    /// Kubernetes auth: the service-account JWT is re-read at every attempt
    /// because projected tokens rotate.
    Kubernetes {
        role: String,
        jwt_path: PathBuf,
    },
    AppRole {
        role_id: String,
        secret_id: Secret,
    },
}

#[derive(Clone, Debug)]
pub struct LoginSettings {
    pub method: LoginMethod,
    /// Normalised mount, e.g. `kubernetes`.
    pub mount: String,
    /// Deadline for the whole login, retries included. Defaults to 30 s.
    pub timeout: Duration,
}

impl LoginSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        let role_id = env.string("VAULT_ROLE_ID");
        let secret_id = env.get("VAULT_SECRET_ID").map(|s| Secret::new(s.trim()));
        let (method, default_mount) = match (role_id, secret_id) {
            (Some(role_id), Some(secret_id)) => {
                (LoginMethod::AppRole { role_id, secret_id }, "approle")
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "VAULT_SECRET_ID",
                    "missing: AppRole login needs VAULT_ROLE_ID and VAULT_SECRET_ID",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "VAULT_ROLE_ID",
                    "missing: AppRole login needs VAULT_ROLE_ID and VAULT_SECRET_ID",
                ))
            }
            (None, None) => (
                LoginMethod::Kubernetes {
                    role: env.required("VAULT_ROLE")?,
                    jwt_path: env.string("SERVICE_ACCOUNT_TOKEN_PATH").map_or_else(
                        || PathBuf::from(DEFAULT_SA_DIR).join("token"),
                        PathBuf::from,
                    ),
                },
                "kubernetes",
            ),
        };
        let mount = match env.get("VAULT_AUTH_MOUNT_PATH") {
            None => default_mount.to_string(),
            Some(v) => normalize_mount(v).ok_or_else(|| {
                Error::config(
                    "VAULT_AUTH_MOUNT_PATH",
                    format!("invalid mount {v:?}, expected e.g. kubernetes or auth/kubernetes"),
                )
            })?,
        };
        Ok(LoginSettings {
            method,
            mount,
            timeout: env.duration("LOGIN_TIMEOUT", Duration::from_secs(30))?,
        })
    }
}

/// `kubernetes`, `/kubernetes`, `auth/kubernetes`, `/auth/kubernetes/` all
/// mean the mount `kubernetes`, as in the Go tool.
pub fn normalize_mount(v: &str) -> Option<String> {
    let v = v.trim().trim_matches('/');
    let v = v.strip_prefix("auth/").unwrap_or(v).trim_matches('/');
    let ok = !v.is_empty()
        && v != "auth"
        && v.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !v.contains(['?', '#', ' ']);
    ok.then(|| v.to_string())
}

/// Where and how the token file is written.
#[derive(Clone, Debug)]
pub struct TokenFileSettings {
    pub path: PathBuf,
    /// Defaults to 0640 (Vault Agent's sink mode): an app container running as
    /// another user reads it through the group the pod's `fsGroup` gives the
    /// volume; others never can.
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl TokenFileSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        let path = PathBuf::from(
            env.string("VAULT_TOKEN_PATH")
                .ok_or_else(|| Error::config("VAULT_TOKEN_PATH", "missing VAULT_TOKEN_PATH"))?,
        );
        let mode = file_mode(env, "VAULT_TOKEN_FILE_MODE", 0o640)?;
        let (uid, gid) = file_owner(env, "VAULT_TOKEN_FILE_OWNER")?;
        Ok(TokenFileSettings {
            path,
            mode,
            uid,
            gid,
        })
    }
}

/// Octal permissions such as `0600` from `var`, at most `0777`.
fn file_mode(env: &Env, var: &str, default: u32) -> Result<u32> {
    match env.string(var) {
        None => Ok(default),
        Some(v) => Some(v.strip_prefix("0o").unwrap_or(&v))
            .filter(|m| !m.is_empty() && m.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                Error::config(
                    var,
                    format!("invalid mode {v:?}, expected octal permissions such as 0600 or 0640"),
                )
            }),
    }
}

/// `uid`, `uid:gid` or `:gid` from `var`; unset means keep the writer's.
fn file_owner(env: &Env, var: &str) -> Result<(Option<u32>, Option<u32>)> {
    match env.string(var) {
        None => Ok((None, None)),
        Some(v) => parse_owner(&v).ok_or_else(|| {
            Error::config(
                var,
                format!("invalid owner {v:?}, expected numeric uid, uid:gid or :gid"),
            )
        }),
    }
}

fn parse_owner(v: &str) -> Option<(Option<u32>, Option<u32>)> {
    let (u, g) = v.split_once(':').unwrap_or((v, ""));
    // u32::MAX is chown's "leave unchanged" (-1), not an owner.
    let num = |s: &str| -> Option<Option<u32>> {
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().filter(|n| *n != u32::MAX).map(Some)
        } else {
            None
        }
    };
    let (u, g) = (num(u)?, num(g)?);
    (u.is_some() || g.is_some()).then_some((u, g))
}

pub fn log_format(env: &Env) -> Result<crate::log::Format> {
    match env.get("LOG_FORMAT").map(str::trim) {
        None | Some("text") => Ok(crate::log::Format::Text),
        Some("json") => Ok(crate::log::Format::Json),
        Some(v) => Err(Error::config(
            "LOG_FORMAT",
            format!("invalid format {v:?}, expected text or json"),
        )),
    }
}

/// vault-kubernetes-authenticator.
#[derive(Clone, Debug)]
pub struct AuthenticatorConfig {
    pub vault: VaultSettings,
    pub login: LoginSettings,
    pub token_file: TokenFileSettings,
    pub allow_fail: bool,
}

impl AuthenticatorConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(AuthenticatorConfig {
            token_file: TokenFileSettings::from_env(env)?,
            allow_fail: env.bool("ALLOW_FAIL", false)?,
            vault: VaultSettings::from_env(env)?,
            login: LoginSettings::from_env(env)?,
        })
    }
}

/// How to reach the Kubernetes API from inside a pod, or from outside with
/// `KUBERNETES_SERVICEACCOUNT_DIR` pointing at a copy of the pod's directory.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// `https://host:port`.
    pub base_url: String,
    pub token_path: PathBuf,
    pub ca_path: PathBuf,
    pub namespace: String,
    pub timeout: Duration,
}

impl KubeSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        let host = url::parse_bare_host(&env.required("KUBERNETES_SERVICE_HOST")?)
            .map_err(|e| Error::config("KUBERNETES_SERVICE_HOST", e))?;
        let host = url::url_host(&host);
        let port = env
            .string("KUBERNETES_SERVICE_PORT")
            .unwrap_or_else(|| "443".to_string());
        if !matches!(port.parse::<u16>(), Ok(1..)) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::config(
                "KUBERNETES_SERVICE_PORT",
                format!("invalid port {port:?}, expected 1-65535"),
            ));
        }
        let dir = PathBuf::from(
            env.string("KUBERNETES_SERVICEACCOUNT_DIR")
                .unwrap_or_else(|| DEFAULT_SA_DIR.to_string()),
        );
        let namespace = match env.string("POD_NAMESPACE") {
            Some(ns) => ns,
            None => {
                let file = dir.join("namespace");
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        Error::config(
                            "POD_NAMESPACE",
                            format!("not set, and cannot read {}: {e}", file.display()),
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        if !mapping::is_dns_label(&namespace) {
            return Err(Error::config(
                "POD_NAMESPACE",
                format!("invalid namespace {namespace:?}"),
            ));
        }
        Ok(KubeSettings {
            base_url: format!("https://{host}:{port}"),
            token_path: dir.join("token"),
            ca_path: dir.join("ca.crt"),
            namespace,
            timeout: Duration::from_secs(30),
        })
    }
}

/// Where the synchronizer writes: Kubernetes Secrets, or files when
/// `SYNCHRONIZER_TARGET_DIR` is set.
#[derive(Clone, Debug)]
pub enum SyncTarget {
    Secrets(KubeSettings),
    Files(FilesSettings),
}

/// The file target: one directory per Secret name under `dir`, laid out
/// like a mounted Secret volume (see [`crate::files`]).
#[derive(Clone, Debug)]
pub struct FilesSettings {
    /// `SYNCHRONIZER_TARGET_DIR`; must exist (a volume mount).
    pub dir: PathBuf,
    /// Mode of each file, `SYNCHRONIZER_FILE_MODE`. Defaults to 0440.
    pub mode: u32,
    /// `SYNCHRONIZER_FILE_OWNER`, as `VAULT_TOKEN_FILE_OWNER`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FilesSettings {
    /// `None` unless `SYNCHRONIZER_TARGET_DIR` is set.
    pub fn from_env(env: &Env) -> Result<Option<Self>> {
        let Some(dir) = env.string("SYNCHRONIZER_TARGET_DIR") else {
            return Ok(None);
        };
        if !dir.starts_with('/') {
            return Err(Error::config(
                "SYNCHRONIZER_TARGET_DIR",
                format!("{dir:?} is not an absolute path"),
            ));
        }
        let (uid, gid) = file_owner(env, "SYNCHRONIZER_FILE_OWNER")?;
        Ok(Some(FilesSettings {
            dir: PathBuf::from(dir),
            mode: file_mode(env, "SYNCHRONIZER_FILE_MODE", 0o440)?,
            uid,
            gid,
        }))
    }
}

/// vault-kubernetes-synchronizer.
#[derive(Clone, Debug)]
pub struct SynchronizerConfig {
    pub vault: VaultSettings,
    pub token_path: PathBuf,
    pub entries: Vec<Entry>,
    pub prefix: String,
    pub annotation: String,
    pub labels: Vec<(String, String)>,
    pub prune: bool,
    /// Continuous mode when set.
    pub interval: Option<Duration>,
    pub target: SyncTarget,
    /// Go-compatible inputs we accepted with a choice to report at start.
    pub warnings: Vec<String>,
}

impl SynchronizerConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        let token_path = TokenFileSettings::from_env(env)?.path;
        let prefix = env.string("SECRET_PREFIX").unwrap_or_default();
        let (entries, mut warnings) =
            mapping::parse_entries(&env.required("VAULT_SECRETS")?, &prefix)?;
        let annotation = env
            .string("SYNCHRONIZER_ANNOTATION")
            .unwrap_or_else(|| DEFAULT_ANNOTATION.to_string());
        if !mapping::is_qualified_key(&annotation) {
            return Err(Error::config(
                "SYNCHRONIZER_ANNOTATION",
                format!("invalid annotation key {annotation:?}, expected [prefix/]name as in Kubernetes"),
            ));
        }
        let labels = match env.get("SYNCHRONIZER_LABELS") {
            None => Vec::new(),
            Some(v) => {
                let (labels, ignored) = mapping::parse_labels(v)?;
                warnings.extend(ignored);
                labels
            }
        };
        let interval = match env.get("SYNC_INTERVAL") {
            None => None,
            Some(v) => {
                let d = parse_duration(v.trim()).map_err(|e| Error::config("SYNC_INTERVAL", e))?;
                if d < Duration::from_secs(1) {
                    return Err(Error::config(
                        "SYNC_INTERVAL",
                        format!("interval {v:?} too short, at least 1s"),
                    ));
                }
                Some(d)
            }
        };
        Ok(SynchronizerConfig {
            vault: VaultSettings::from_env(env)?,
            token_path,
            entries,
            prefix,
            annotation,
            labels,
            prune: env.bool("SYNCHRONIZER_PRUNE", true)?,
            interval,
            // The file target needs no API server: nothing Kubernetes is read.
            target: match FilesSettings::from_env(env)? {
                Some(files) => SyncTarget::Files(files),
                None => SyncTarget::Secrets(KubeSettings::from_env(env)?),
            },
            warnings,
        })
    }
}

/// vault-kubernetes-token-renewer.
#[derive(Clone, Debug)]
pub struct RenewerConfig {
    pub vault: VaultSettings,
    pub token_file: TokenFileSettings,
    /// Present when `VAULT_REAUTH=true`.
    pub login: Option<LoginSettings>,
    /// Requested increment; zero lets Vault pick the role's TTL.
    pub ttl: Duration,
    pub revoke_on_shutdown: bool,
}

impl RenewerConfig {
    pub fn from_env(env: &Env) -> Result<Self> {
        let reauth = env.bool("VAULT_REAUTH", false)?;
        // Vault takes the increment in whole seconds, up to what Go's
        // durations hold (MAX_DURATION, checked by the parser); a fraction
        // of a second would become 0, "the token's own TTL".
        let ttl = env.duration("VAULT_TTL", Duration::ZERO)?;
        if !ttl.is_zero() && ttl < Duration::from_secs(1) {
            return Err(Error::config(
                "VAULT_TTL",
                format!("{ttl:?} is less than 1s, the smallest increment Vault takes"),
            ));
        }
        Ok(RenewerConfig {
            token_file: TokenFileSettings::from_env(env)?,
            ttl,
            revoke_on_shutdown: env.bool("VAULT_REVOKE_ON_SHUTDOWN", false)?,
            vault: VaultSettings::from_env(env)?,
            login: if reauth {
                Some(LoginSettings::from_env(env)?)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go_syntax() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in ["", "-5s", "5x", "h", "1h-3m", "abc", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_bounded_like_go() {
        // Go's largest duration, with a unit or as plain seconds.
        assert_eq!(
            parse_duration("2562047h47m16.854775807s").unwrap(),
            MAX_DURATION
        );
        assert_eq!(
            parse_duration("9223372036").unwrap().as_secs(),
            9_223_372_036
        );
        for big in [
            "9223372037",
            "18446744073709551615",
            "9223372036854775808",
            "99999999999999999999999999",
            "2562048h",
            "1e300h",
        ] {
            assert!(parse_duration(big).is_err(), "{big}");
        }
        let env = Env::from_pairs([
            ("LOGIN_TIMEOUT", "18446744073709551615"),
            ("VAULT_ROLE", "r"),
        ]);
        let err = LoginSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("LOGIN_TIMEOUT: duration"), "{err}");
    }

    #[test]
    fn blank_values_are_unset() {
        let env = Env::from_pairs([("VAULT_ROLE", "   "), ("VAULT_TOKEN_PATH", " \t ")]);
        let err = LoginSettings::from_env(&env).unwrap_err().to_string();
        assert_eq!(err, "VAULT_ROLE: missing, it is required");
        let err = TokenFileSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_TOKEN_PATH: missing"), "{err}");
        let env = Env::from_pairs([("KUBERNETES_SERVICE_HOST", "  "), ("POD_NAMESPACE", "ns")]);
        let err = KubeSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("KUBERNETES_SERVICE_HOST: missing"), "{err}");
        // A blank optional value takes its default.
        let env = Env::from_pairs([("VAULT_ADDR", " "), ("VAULT_CLIENT_TIMEOUT", "  ")]);
        let v = VaultSettings::from_env(&env).unwrap();
        assert_eq!(
            (v.addr.as_str(), v.timeout),
            (DEFAULT_VAULT_ADDR, Duration::from_secs(60))
        );
    }

    #[test]
    fn addresses_are_parsed_fully() {
        for bad in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:8200?query#fragment",
            "http://[::1:80",
            "http://vault:8200 x",
        ] {
            let env = Env::from_pairs([("VAULT_ADDR", bad)]);
            let err = VaultSettings::from_env(&env).unwrap_err().to_string();
            assert!(
                err.starts_with("VAULT_ADDR: invalid address"),
                "{bad}: {err}"
            );
        }
        let env = Env::from_pairs([("VAULT_ADDR", "http://user:hunter2@127.0.0.1:99999")]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("user:xxxxx@") && !err.contains("hunter2"),
            "{err}"
        );
        let env = Env::from_pairs([("VAULT_ADDR", "https://[::1]:8200/")]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().addr,
            "https://[::1]:8200"
        );
        for (host, port) in [
            ("a b", "443"),
            ("{host}", "443"),
            ("10.0.0.1", "0"),
            ("10.0.0.1", "+5"),
        ] {
            let env = Env::from_pairs([
                ("KUBERNETES_SERVICE_HOST", host),
                ("KUBERNETES_SERVICE_PORT", port),
                ("POD_NAMESPACE", "ns"),
            ]);
            let err = KubeSettings::from_env(&env).unwrap_err().to_string();
            assert!(
                err.starts_with("KUBERNETES_SERVICE_"),
                "{host} {port}: {err}"
            );
        }
        let env = Env::from_pairs([
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
            ("POD_NAMESPACE", "ns"),
        ]);
        assert_eq!(
            KubeSettings::from_env(&env).unwrap().base_url,
            "https://[fd00::1]:6443"
        );
    }

    #[test]
    fn proxy_errors_hide_passwords() {
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.example:8200"),
            ("HTTPS_PROXY", "http://user:hunter2@proxy:99999"),
        ]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.starts_with("HTTPS_PROXY: invalid proxy address"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        // Go's rules: CIDR entries match, loopback never goes to a proxy.
        let env = Env::from_pairs([
            ("VAULT_ADDR", "http://10.1.2.3:8200"),
            ("HTTP_PROXY", "proxy:3128"),
            ("NO_PROXY", "10.0.0.0/8"),
        ]);
        assert_eq!(VaultSettings::from_env(&env).unwrap().proxy, None);
    }

    #[test]
    fn max_retries_take_go_parse_uint_syntax() {
        let retries = |v| VaultSettings::from_env(&Env::from_pairs([("VAULT_MAX_RETRIES", v)]));
        assert_eq!(retries(" 5 ").unwrap().max_retries, 5);
        for bad in ["+5", "-1", "4294967296", "5x"] {
            let err = retries(bad).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_MAX_RETRIES: "), "{bad}: {err}");
        }
    }

    #[test]
    fn vault_ttl_is_checked_at_start() {
        let env = |ttl| Env::from_pairs([("VAULT_TOKEN_PATH", "/t"), ("VAULT_TTL", ttl)]);
        let ok = RenewerConfig::from_env(&env("2562047h47m16s")).unwrap();
        assert_eq!(ok.ttl.as_secs(), 9_223_372_036);
        for bad in ["2562047h47m17s", "500ms", "18446744073709551615"] {
            let err = RenewerConfig::from_env(&env(bad)).unwrap_err().to_string();
            assert!(err.starts_with("VAULT_TTL: "), "{bad}: {err}");
        }
    }

    #[test]
    fn booleans_follow_go_syntax() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn mounts_are_normalised_like_the_go_tool() {
        for m in [
            "kubernetes",
            "/kubernetes",
            "auth/kubernetes",
            "/kubernetes/",
            "/auth/kubernetes/",
        ] {
            assert_eq!(normalize_mount(m).as_deref(), Some("kubernetes"), "{m}");
        }
        assert_eq!(
            normalize_mount("auth/k8s/prod").as_deref(),
            Some("k8s/prod")
        );
        assert_eq!(normalize_mount("/"), None);
        assert_eq!(normalize_mount("auth/"), None);
    }

    #[test]
    fn bad_reauth_names_reauth_not_allow_fail() {
        let env = Env::from_pairs([("VAULT_TOKEN_PATH", "/t"), ("VAULT_REAUTH", "yes")]);
        let err = RenewerConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_REAUTH: "), "{err}");
    }

    #[test]
    fn approle_defaults_to_its_own_mount() {
        let env = Env::from_pairs([("VAULT_ROLE_ID", "r"), ("VAULT_SECRET_ID", "s")]);
        let login = LoginSettings::from_env(&env).unwrap();
        assert_eq!(login.mount, "approle");
        assert!(!format!("{login:?}").contains("\"s\""));
    }

    #[test]
    fn headers_refuse_vault_names() {
        let env = Env::from_pairs([("VAULT_HEADERS", r#"{"X-Vault-Token":"x"}"#)]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_HEADERS: "), "{err}");
        let env = Env::from_pairs([("VAULT_HEADERS", r#"{"X-Team":"a"}"#)]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().headers,
            vec![("X-Team".to_string(), "a".to_string())]
        );
    }

    #[test]
    fn proxy_respects_no_proxy() {
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.corp.example:8200"),
            ("HTTPS_PROXY", "proxy:3128"),
            ("NO_PROXY", "localhost,.example"),
        ]);
        assert_eq!(VaultSettings::from_env(&env).unwrap().proxy, None);
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.other:8200"),
            ("HTTPS_PROXY", "proxy:3128"),
            ("NO_PROXY", "localhost,.example"),
        ]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().proxy.as_deref(),
            Some("http://proxy:3128")
        );
    }

    #[test]
    fn agent_addr_overrides_vault_addr_and_unix_sockets_are_addresses() {
        let env = Env::from_pairs([
            ("VAULT_ADDR", "https://vault.example:8200"),
            ("VAULT_AGENT_ADDR", "http://127.0.0.1:8100"),
        ]);
        assert_eq!(
            VaultSettings::from_env(&env).unwrap().addr,
            "http://127.0.0.1:8100"
        );
        let env = Env::from_pairs([
            ("VAULT_AGENT_ADDR", "unix:///run/agent.sock"),
            ("HTTPS_PROXY", "proxy:3128"),
        ]);
        let v = VaultSettings::from_env(&env).unwrap();
        assert_eq!((v.addr.as_str(), v.proxy), ("unix:///run/agent.sock", None));
        let env = Env::from_pairs([("VAULT_AGENT_ADDR", "ftp://x")]);
        let err = VaultSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("VAULT_AGENT_ADDR: "), "{err}");
    }

    #[test]
    fn go_client_variables_are_supported_or_refused_by_name() {
        for var in ["VAULT_SRV_LOOKUP", "VAULT_WRAP_TTL", "VAULT_MFA"] {
            let env = Env::from_pairs([(var, "1")]);
            let err = VaultSettings::from_env(&env).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}: not supported: ")), "{err}");
        }
        let env = Env::from_pairs([("VAULT_TOKEN", "s.x")]);
        let v = VaultSettings::from_env(&env).unwrap();
        assert_eq!(
            v.warnings,
            ["VAULT_TOKEN is set but not used: the token always comes from VAULT_TOKEN_PATH"]
        );
        let env = Env::from_pairs([("VAULT_DISABLE_REDIRECTS", "true")]);
        assert!(VaultSettings::from_env(&env).unwrap().disable_redirects);
    }

    #[test]
    fn rate_limits_parse_as_the_go_client() {
        let limit = |per_second, burst| RateLimit { per_second, burst };
        assert_eq!(parse_rate_limit("10"), Ok(limit(10.0, 10)));
        assert_eq!(parse_rate_limit("2.5:7"), Ok(limit(2.5, 7)));
        // Go's limiter refused every request with a burst of 0.
        assert_eq!(parse_rate_limit("0.5"), Ok(limit(0.5, 1)));
        for bad in ["", "0", "-1", "x", "1:x", "1:-2", "inf"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_file_mode_and_owner() {
        let env = Env::from_pairs([
            ("VAULT_TOKEN_PATH", "/t"),
            ("VAULT_TOKEN_FILE_MODE", "0640"),
            ("VAULT_TOKEN_FILE_OWNER", "1000:2000"),
        ]);
        let t = TokenFileSettings::from_env(&env).unwrap();
        assert_eq!((t.mode, t.uid, t.gid), (0o640, Some(1000), Some(2000)));
        let env = Env::from_pairs([("VAULT_TOKEN_PATH", "/t"), ("VAULT_TOKEN_FILE_MODE", "999")]);
        assert!(TokenFileSettings::from_env(&env).is_err());
    }

    #[test]
    fn file_target_needs_no_kubernetes_settings() {
        let env = Env::from_pairs([
            ("VAULT_TOKEN_PATH", "/t"),
            ("VAULT_SECRETS", "secret/a"),
            ("SYNCHRONIZER_TARGET_DIR", "/vault/secrets"),
        ]);
        let cfg = SynchronizerConfig::from_env(&env).unwrap();
        let SyncTarget::Files(files) = cfg.target else {
            panic!("file target expected")
        };
        assert_eq!((files.mode, files.uid, files.gid), (0o440, None, None));
        let env = Env::from_pairs([
            ("SYNCHRONIZER_TARGET_DIR", "/d"),
            ("SYNCHRONIZER_FILE_MODE", "0444"),
            ("SYNCHRONIZER_FILE_OWNER", ":2000"),
        ]);
        let files = FilesSettings::from_env(&env).unwrap().unwrap();
        assert_eq!(
            (files.mode, files.uid, files.gid),
            (0o444, None, Some(2000))
        );
        for (var, value) in [
            ("SYNCHRONIZER_TARGET_DIR", "relative"),
            ("SYNCHRONIZER_FILE_MODE", "1777"),
            ("SYNCHRONIZER_FILE_OWNER", "app"),
        ] {
            let env = Env::from_pairs([("SYNCHRONIZER_TARGET_DIR", "/d"), (var, value)]);
            let err = FilesSettings::from_env(&env).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}: ")), "{err}");
        }
    }
}

//! How to reach Vault, shared by every program: `VAULT_ADDR` (or
//! `VAULT_AGENT_ADDR`), TLS, proxies, headers, timeouts, retries and the
//! client-side rate limit, with Vault's Go client's names and rules.

use std::path::PathBuf;
use std::time::Duration;

use super::Env;
use crate::error::{Error, Result};
use crate::url::{self, Url};

pub const DEFAULT_VAULT_ADDR: &str = "https://127.0.0.1:8200";

/// Where the TLS trust and identity come from.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    /// What messages call `ca_file`: `VAULT_CACERT` when `None`; the
    /// Kubernetes client names the setting its `ca.crt` comes from.
    pub ca_file_source: Option<&'static str>,
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
    /// The variable `addr` came from: `VAULT_AGENT_ADDR` when set, else
    /// `VAULT_ADDR` (named in connection errors).
    pub addr_var: &'static str,
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
        let url = match url::socket_path(&addr) {
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
            ca_file_source: None,
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
            // 0 is no timeout, as in Vault's Go client (it was 1 ms).
            timeout: match env.duration("VAULT_CLIENT_TIMEOUT", Duration::from_secs(60))? {
                Duration::ZERO => crate::time::NO_TIMEOUT,
                timeout => timeout,
            },
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
            addr_var,
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

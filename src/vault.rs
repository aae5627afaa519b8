//! The Vault (and OpenBao) API the three programs use: login (Kubernetes
//! and AppRole), token lookup, renewal and revocation, and KV reads and
//! lists on version 1 and 2 mounts. Every request carries
//! `X-Vault-Request: true` and, when set, `X-Vault-Namespace`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::{LoginMethod, LoginSettings, Secret, VaultSettings};
use crate::error::{Error, Result};
use crate::http::{retrying, HttpClient, Method, Request, Response, Retry};

#[derive(Clone, Debug)]
pub struct VaultClient {
    http: HttpClient,
    timeout: Duration,
    max_retries: u32,
}

/// The `auth` block of a login or renewal.
#[derive(Clone, Debug)]
pub struct Auth {
    pub client_token: Secret,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub warnings: Vec<String>,
}

/// What `lookup-self` says about a token.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenInfo {
    /// Seconds left.
    #[serde(default)]
    pub ttl: u64,
    #[serde(default)]
    pub creation_ttl: u64,
    #[serde(default)]
    pub explicit_max_ttl: u64,
    #[serde(default)]
    pub period: Option<u64>,
    #[serde(default)]
    pub renewable: bool,
}

/// A KV mount and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvMount {
    /// With trailing slash, e.g. `secret/`.
    pub path: String,
    pub version: u8,
}

impl KvMount {
    /// The path inside the mount, without the v2 `data/`/`metadata/` part.
    pub fn relative<'a>(&self, full: &'a str) -> &'a str {
        let rel = full
            .strip_prefix(self.path.as_str())
            .or_else(|| full.strip_prefix(self.path.trim_end_matches('/')))
            .unwrap_or(full)
            .trim_start_matches('/');
        if self.version == 2 {
            for api in ["data/", "metadata/"] {
                if let Some(rest) = rel.strip_prefix(api) {
                    return rest;
                }
            }
            if rel == "data" || rel == "metadata" {
                return "";
            }
        }
        rel
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    auth: Option<RawAuth>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawAuth {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl VaultClient {
    pub fn new(settings: &VaultSettings) -> Result<Self> {
        if settings.tls.skip_verify {
            crate::log::warn("VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not verified, do not use this in production");
        }
        let mut headers = vec![("X-Vault-Request".to_string(), "true".to_string())];
        if let Some(ns) = &settings.namespace {
            headers.push(("X-Vault-Namespace".to_string(), ns.clone()));
        }
        headers.extend(settings.headers.iter().cloned());
        let http = HttpClient::new(
            &settings.addr,
            &settings.tls,
            settings.proxy.as_deref(),
            settings.timeout,
            headers,
        )?;
        Ok(VaultClient {
            http,
            timeout: settings.timeout,
            max_retries: settings.max_retries,
        })
    }

    pub fn addr(&self) -> &str {
        self.http.display_url()
    }

    fn call(&self, req: Request<'_>) -> Result<Response> {
        self.http.send(&req, Retry::Times(self.max_retries))
    }

    /// A GET with the token, retried as configured.
    fn get(&self, token: &Secret, path: &str) -> Result<Response> {
        self.call(Request::new(Method::Get, path).header("X-Vault-Token", token.expose()))
    }

    /// Logs in, retrying transient failures until `login.timeout` has
    /// passed. The service-account JWT is re-read at every try.
    pub fn login(&self, login: &LoginSettings) -> Result<Auth> {
        let deadline = Instant::now() + login.timeout;
        self.login_until(login, Retry::Until(deadline))
    }

    pub fn login_until(&self, login: &LoginSettings, retry: Retry) -> Result<Auth> {
        let path = format!("/v1/auth/{}/login", encode_path(&login.mount));
        retrying(retry, self.timeout, |budget| {
            let body = match &login.method {
                LoginMethod::Kubernetes { role, jwt_path } => {
                    let jwt = std::fs::read_to_string(jwt_path).map_err(|e| {
                        Error::io(
                            format!("read service account token {}", jwt_path.display()),
                            e,
                        )
                    })?;
                    let jwt = jwt.trim();
                    if jwt.is_empty() {
                        return Err(Error::Other(format!(
                            "service account token {} is empty",
                            jwt_path.display()
                        )));
                    }
                    json!({ "role": role, "jwt": jwt })
                }
                LoginMethod::AppRole { role_id, secret_id } => {
                    json!({ "role_id": role_id, "secret_id": secret_id.expose() })
                }
            };
            let resp = self
                .http
                .once(&Request::new(Method::Post, &path).json(&body), budget)?;
            auth_of(&resp, "login")
        })
    }

    pub fn lookup_self(&self, token: &Secret) -> Result<TokenInfo> {
        let resp = self.get(token, "/v1/auth/token/lookup-self")?;
        let env: Envelope<TokenInfo> = resp.json("token lookup")?;
        env.data.ok_or_else(|| Error::Decode {
            context: "token lookup".into(),
            reason: "response without data".into(),
        })
    }

    /// Renews with `increment` (zero lets Vault choose). One try: the
    /// renewer schedules its own retries around the token's expiry.
    pub fn renew_self(&self, token: &Secret, increment: Duration) -> Result<Auth> {
        let resp = self.http.once(
            &Request::new(Method::Post, "/v1/auth/token/renew-self")
                .header("X-Vault-Token", token.expose())
                .json(&json!({ "increment": increment.as_secs() })),
            self.timeout,
        )?;
        auth_of(&resp, "token renewal")
    }

    pub fn revoke_self(&self, token: &Secret) -> Result<()> {
        self.call(
            Request::new(Method::Post, "/v1/auth/token/revoke-self")
                .header("X-Vault-Token", token.expose()),
        )?;
        Ok(())
    }

    /// The KV mount holding `path` and its version, without needing `read`
    /// on `sys/mounts`: `sys/internal/ui/mounts/<path>` answers for paths
    /// the token has any capability on, and picks the longest matching mount.
    pub fn kv_mount(&self, token: &Secret, path: &str) -> Result<KvMount> {
        let url = format!("/v1/sys/internal/ui/mounts/{}", encode_path(path));
        let resp = match self.get(token, &url) {
            Ok(resp) => resp,
            // Servers without this endpoint: assume KV v1, path as given.
            Err(Error::Api { status: 404, .. }) => {
                return Ok(KvMount {
                    path: String::new(),
                    version: 1,
                })
            }
            Err(e) => return Err(e.context(format!("find the KV mount of {path}"))),
        };
        #[derive(Deserialize)]
        struct MountData {
            #[serde(default)]
            path: String,
            #[serde(default, rename = "type")]
            kind: String,
            #[serde(default)]
            options: Option<Map<String, Value>>,
        }
        let env: Envelope<MountData> = resp.json(format!("mount of {path}"))?;
        let data = env.data.ok_or_else(|| Error::Decode {
            context: format!("mount of {path}"),
            reason: "response without data".into(),
        })?;
        if !data.kind.is_empty() && data.kind != "kv" && data.kind != "generic" {
            return Err(Error::Other(format!(
                "{path} is on a {:?} mount ({}), not a KV mount",
                data.kind, data.path
            )));
        }
        let version = match data
            .options
            .as_ref()
            .and_then(|o| o.get("version"))
            .and_then(Value::as_str)
        {
            Some("2") => 2,
            _ => 1,
        };
        Ok(KvMount {
            path: data.path,
            version,
        })
    }

    /// Reads the latest version of a KV secret. `None` when it does not
    /// exist or its latest version is deleted or destroyed.
    pub fn kv_read(
        &self,
        token: &Secret,
        mount: &KvMount,
        rel: &str,
    ) -> Result<Option<Map<String, Value>>> {
        let url = match mount.version {
            2 => format!("/v1/{}data/{}", encode_path(&mount.path), encode_path(rel)),
            _ => format!("/v1/{}{}", encode_path(&mount.path), encode_path(rel)),
        };
        let resp = match self.get(token, &url) {
            Ok(resp) => resp,
            Err(Error::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let env: Envelope<Value> = resp.json(format!("read {}{rel}", mount.path))?;
        let data = env.data.unwrap_or(Value::Null);
        let data = if mount.version == 2 {
            data.get("data").cloned().unwrap_or(Value::Null)
        } else {
            data
        };
        match data {
            Value::Object(map) => Ok(Some(map)),
            Value::Null => Ok(None),
            _ => Err(Error::Decode {
                context: format!("read {}{rel}", mount.path),
                reason: "secret data is not an object".into(),
            }),
        }
    }

    /// Keys directly under a KV folder; sub-folders end with `/`. An empty
    /// or missing folder is an empty list.
    pub fn kv_list(&self, token: &Secret, mount: &KvMount, rel: &str) -> Result<Vec<String>> {
        let rel = rel.trim_end_matches('/');
        let folder = if rel.is_empty() {
            String::new()
        } else {
            format!("{}/", encode_path(rel))
        };
        let url = match mount.version {
            2 => format!(
                "/v1/{}metadata/{folder}?list=true",
                encode_path(&mount.path)
            ),
            _ => format!("/v1/{}{folder}?list=true", encode_path(&mount.path)),
        };
        let resp = match self.get(token, &url) {
            Ok(resp) => resp,
            Err(Error::Api { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Keys {
            #[serde(default)]
            keys: Vec<String>,
        }
        let env: Envelope<Keys> = resp.json(format!("list {}{rel}/", mount.path))?;
        Ok(env.data.map(|d| d.keys).unwrap_or_default())
    }
}

fn auth_of(resp: &Response, what: &str) -> Result<Auth> {
    let env: Envelope<Value> = resp.json(what)?;
    let auth = env.auth.ok_or_else(|| Error::Decode {
        context: what.to_string(),
        reason: "response without auth block".into(),
    })?;
    Ok(Auth {
        client_token: Secret::new(auth.client_token),
        lease_duration: Duration::from_secs(auth.lease_duration),
        renewable: auth.renewable,
        warnings: env.warnings.unwrap_or_default(),
    })
}

/// Percent-encodes each segment of a Vault path, keeping the slashes.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv2_paths_accept_api_spellings() {
        let m = KvMount {
            path: "secret/".into(),
            version: 2,
        };
        assert_eq!(m.relative("secret/k8s/x"), "k8s/x");
        assert_eq!(m.relative("secret/data/k8s/x"), "k8s/x");
        assert_eq!(m.relative("secret/metadata/k8s"), "k8s");
        assert_eq!(m.relative("secret/data"), "");
        let v1 = KvMount {
            path: "kv1/".into(),
            version: 1,
        };
        assert_eq!(v1.relative("kv1/data/x"), "data/x");
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("secret/a b/c?d"), "secret/a%20b/c%3Fd");
    }
}

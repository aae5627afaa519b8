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
use crate::token_file;

/// Answer limit of auth calls (login, lookup, renewal, revocation, mount
/// lookup): a login answer is about 1 KiB even with many policies and
/// metadata; 64 KiB leaves room and keeps a hostile answer harmless.
pub const AUTH_LIMIT: u64 = 64 * 1024;
/// Answer limit of a KV read. A Kubernetes Secret holds at most 1 MiB of
/// data; as `base64:` values that is 1.4 MB of JSON, plus keys and the KV
/// v2 envelope: a secret over 1.5 MiB of JSON could not be written anyway.
/// With 8 reads in parallel this bounds what Vault can make the
/// synchronizer hold (see the "hostile answer" rows of scripts/bench.sh).
pub const KV_READ_LIMIT: u64 = 1536 * 1024;
/// Answer limit of a KV folder list: about 50 000 keys of 80 bytes.
pub const KV_LIST_LIMIT: u64 = 4 * 1024 * 1024;
/// Longest token accepted from Vault, in bytes. Service tokens are about
/// 100 bytes (`hvs.` + 24–90 characters), batch tokens a few hundred; 4 KiB
/// is far above both and still fits any server's header limit (Go's is 1 MiB,
/// but proxies often cut at 8 KiB).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest TTL or lease accepted from Vault: 10 years. Vault caps TTLs at
/// the mount's max lease TTL (32 days by default); anything longer is a
/// broken answer, and would overflow the clock arithmetic.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Checks a token before it is used, stored or written: non-empty, at most
/// [`MAX_TOKEN_LEN`] bytes, printable ASCII without whitespace (Vault's
/// tokens are base62 with a `hvs.`/`hvb.`/`s.` prefix). The reason never
/// contains the token.
pub fn check_token(token: &str) -> std::result::Result<(), String> {
    if token.is_empty() {
        return Err("empty token".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "token of {} bytes, longer than {MAX_TOKEN_LEN}",
            token.len()
        ));
    }
    if let Some(pos) = token.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "token with a whitespace or non-printable character at byte {pos}"
        ));
    }
    Ok(())
}

/// A TTL in seconds from an answer, checked against [`MAX_TTL`].
fn check_ttl(what: &str, secs: u64) -> std::result::Result<Duration, String> {
    let d = Duration::from_secs(secs);
    if d > MAX_TTL {
        return Err(format!(
            "{what} of {secs}s, longer than {}s",
            MAX_TTL.as_secs()
        ));
    }
    Ok(d)
}

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
        for warning in &settings.warnings {
            crate::log::warn(warning);
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
        )?
        .follow_redirects(!settings.disable_redirects)
        .rate_limit(settings.rate_limit);
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

    /// A GET with the token, retried as configured, answer up to `limit` bytes.
    fn get(&self, token: &Secret, path: &str, limit: u64) -> Result<Response> {
        self.call(
            Request::new(Method::Get, path)
                .header("X-Vault-Token", token.expose())
                .limit(limit),
        )
    }

    /// Logs in, retrying transient failures until `login.timeout` has
    /// passed. The service-account JWT is re-read at every try.
    pub fn login(&self, login: &LoginSettings) -> Result<Auth> {
        let deadline = crate::http::instant_after(Instant::now(), login.timeout);
        self.login_until(login, Retry::Until(deadline))
    }

    pub fn login_until(&self, login: &LoginSettings, retry: Retry) -> Result<Auth> {
        let path = format!("/v1/auth/{}/login", encode_path(&login.mount));
        retrying(retry, self.timeout, |budget| {
            let body = match &login.method {
                LoginMethod::Kubernetes { role, jwt_path } => {
                    let jwt = token_file::read_credential(jwt_path, "service account token")?
                        .ok_or_else(|| {
                            Error::Other(format!(
                                "service account token {} is empty",
                                jwt_path.display()
                            ))
                        })?;
                    json!({ "role": role, "jwt": jwt.expose() })
                }
                LoginMethod::AppRole { role_id, secret_id } => {
                    json!({ "role_id": role_id, "secret_id": secret_id.expose() })
                }
            };
            let resp = self.http.once(
                &Request::new(Method::Post, &path)
                    .json(&body)
                    .limit(AUTH_LIMIT),
                budget,
            )?;
            let auth = auth_of(&resp, "login")?;
            if auth.lease_duration.is_zero() {
                return Err(Error::Invalid {
                    context: "login".into(),
                    reason: "lease_duration of 0s".into(),
                });
            }
            Ok(auth)
        })
    }

    /// `lookup-self`, retried as configured but never past `deadline`
    /// (the expiry of the token the renewer holds, if any). TTLs over
    /// [`MAX_TTL`] are an invalid answer.
    pub fn lookup_self(&self, token: &Secret, deadline: Option<Instant>) -> Result<TokenInfo> {
        let mut req = Request::new(Method::Get, "/v1/auth/token/lookup-self")
            .header("X-Vault-Token", token.expose())
            .limit(AUTH_LIMIT);
        if let Some(d) = deadline {
            req = req.deadline(d);
        }
        let resp = self.call(req)?;
        let env: Envelope<TokenInfo> = resp.json("token lookup")?;
        let info = env.data.ok_or_else(|| Error::Decode {
            context: "token lookup".into(),
            reason: "response without data".into(),
        })?;
        for (what, v) in [
            ("ttl", info.ttl),
            ("creation_ttl", info.creation_ttl),
            ("explicit_max_ttl", info.explicit_max_ttl),
            ("period", info.period.unwrap_or(0)),
        ] {
            check_ttl(what, v).map_err(|reason| Error::Invalid {
                context: "token lookup".into(),
                reason,
            })?;
        }
        Ok(info)
    }

    /// Renews with `increment` (zero lets Vault choose). One try, ending by
    /// `deadline` at the latest: the renewer schedules its own retries
    /// around the token's expiry. A lease of zero is an invalid answer.
    pub fn renew_self(
        &self,
        token: &Secret,
        increment: Duration,
        deadline: Instant,
    ) -> Result<Auth> {
        let resp = self.http.once(
            &Request::new(Method::Post, "/v1/auth/token/renew-self")
                .header("X-Vault-Token", token.expose())
                .json(&json!({ "increment": increment.as_secs() }))
                .limit(AUTH_LIMIT)
                .deadline(deadline),
            self.timeout,
        )?;
        let auth = auth_of(&resp, "token renewal")?;
        if auth.lease_duration.is_zero() {
            return Err(Error::Invalid {
                context: "token renewal".into(),
                reason: "lease_duration of 0s".into(),
            });
        }
        Ok(auth)
    }

    /// `revoke-self`, one try within `within`, even after a signal (it is
    /// what the renewer does on SIGTERM).
    pub fn revoke_self(&self, token: &Secret, within: Duration) -> Result<()> {
        self.http.once(
            &Request::new(Method::Post, "/v1/auth/token/revoke-self")
                .header("X-Vault-Token", token.expose())
                .limit(AUTH_LIMIT)
                .uninterruptible(),
            within,
        )?;
        Ok(())
    }

    /// The KV mount holding `path` and its version, without needing `read`
    /// on `sys/mounts`: `sys/internal/ui/mounts/<path>` answers for paths
    /// the token has any capability on, and picks the longest matching mount.
    pub fn kv_mount(&self, token: &Secret, path: &str) -> Result<KvMount> {
        let url = format!("/v1/sys/internal/ui/mounts/{}", encode_path(path));
        let resp = match self.get(token, &url, AUTH_LIMIT) {
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
        let resp = match self.get(token, &url, KV_READ_LIMIT) {
            Ok(resp) => resp,
            Err(Error::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let env: Envelope<Value> = resp.json(format!("read {}{rel}", mount.path))?;
        // Up to KV_READ_LIMIT each, 8 reads at a time: no copy kept longer
        // than needed, so a valid answer costs about twice its size.
        drop(resp);
        let data = env.data.unwrap_or(Value::Null);
        let data = if mount.version == 2 {
            match data {
                Value::Object(mut outer) => outer.remove("data").unwrap_or(Value::Null),
                _ => Value::Null,
            }
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
    /// or missing folder (404) is an empty list; a 200 answer without
    /// `data.keys` is an error ([`Error::Decode`]).
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
        let resp = match self.get(token, &url, KV_LIST_LIMIT) {
            Ok(resp) => resp,
            Err(Error::Api { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Keys {
            keys: Option<Vec<String>>,
        }
        let what = format!("list {}{rel}/", mount.path);
        let env: Envelope<Keys> = resp.json(&what)?;
        // Vault answers an empty folder with 404 (above); a 200 without
        // `data.keys` (a proxy or cache gone wrong) must not read as "every
        // secret of the folder deleted", which prune would act on.
        env.data.and_then(|d| d.keys).ok_or_else(|| Error::Decode {
            context: what,
            reason: "answer without data.keys".into(),
        })
    }
}

fn auth_of(resp: &Response, what: &str) -> Result<Auth> {
    let env: Envelope<Value> = resp.json(what)?;
    let auth = env.auth.ok_or_else(|| Error::Decode {
        context: what.to_string(),
        reason: "response without auth block".into(),
    })?;
    let invalid = |reason| Error::Invalid {
        context: what.to_string(),
        reason,
    };
    check_token(&auth.client_token).map_err(invalid)?;
    let lease_duration = check_ttl("lease_duration", auth.lease_duration).map_err(invalid)?;
    Ok(Auth {
        client_token: Secret::new(auth.client_token),
        lease_duration,
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
    fn tokens_are_checked_before_use() {
        assert!(check_token("hvs.CAESIJ3x-_Abc").is_ok());
        assert!(check_token(&"a".repeat(MAX_TOKEN_LEN)).is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("hvs.abc\n", "byte 7"),
            ("hvs. abc", "byte 4"),
            ("hvs.\u{7f}", "non-printable"),
            ("hvs.é", "non-printable"),
        ] {
            let err = check_token(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(bad.is_empty() || !err.contains(bad), "token not in message");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(check_token(&long).unwrap_err().contains("longer than 4096"));
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(check_ttl("ttl", 30), Ok(Duration::from_secs(30)));
        assert!(check_ttl("ttl", MAX_TTL.as_secs()).is_ok());
        assert!(check_ttl("ttl", u64::MAX).unwrap_err().contains("ttl of"));
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("secret/a b/c?d"), "secret/a%20b/c%3Fd");
    }
}

//! KV secrets, version 1 and 2: which mount holds a path (and whether it
//! is KV at all), reading the latest or a given version of a secret,
//! listing a folder, and what a value becomes as bytes.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Envelope, VaultClient, AUTH_LIMIT, KV_LIST_LIMIT, KV_READ_LIMIT};
use crate::base64;
use crate::error::{Error, Result};
use crate::http::{Method, Request, Response};
use crate::secret::Secret;
use crate::url::encode_path;

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

/// A secrets engine mount, as `sys/internal/ui/mounts` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// With trailing slash, e.g. `secret/`.
    pub path: String,
    /// The engine: `kv`, `generic` (old KV), `database`, `pki`, ...
    pub kind: String,
    /// 2 for a KV v2 mount, else 1.
    pub kv_version: u8,
}

impl Mount {
    /// KV holds static secrets: no lease, nothing minted by a read.
    pub fn is_kv(&self) -> bool {
        self.kind.is_empty() || self.kind == "kv" || self.kind == "generic"
    }

    pub fn kv(&self) -> KvMount {
        KvMount {
            path: self.path.clone(),
            version: self.kv_version,
        }
    }
}

impl VaultClient {
    /// A KV GET whose 404 comes back as an answer, for [`vault_404`].
    fn get_kv(&self, token: &Secret, path: &str, limit: u64) -> Result<Response> {
        self.call(
            Request::new(Method::Get, path)
                .header("X-Vault-Token", token.expose())
                .limit(limit)
                .answer_404(),
        )
    }

    /// The mount holding `path`, its type and KV version, without needing
    /// `read` on `sys/mounts`: `sys/internal/ui/mounts/<path>` answers for
    /// paths the token has any capability on, and picks the longest
    /// matching mount. Nothing is read from the mount itself.
    pub fn mount(&self, token: &Secret, path: &str) -> Result<Mount> {
        let url = format!("/v1/sys/internal/ui/mounts/{}", encode_path(path));
        // Every Vault since 0.10 and every OpenBao serve this endpoint, so
        // a 404 is never "KV v1": it is a namespace that does not exist
        // (VAULT_NAMESPACE) or a gateway hiding the path. Guessing v1 would
        // read the folder with the wrong spelling, get a 404 and prune.
        let resp = self
            .get(token, &url, AUTH_LIMIT)
            .map_err(|e| e.context(format!("find the KV mount of {path}")))?;
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
        let kv_version = match data
            .options
            .as_ref()
            .and_then(|o| o.get("version"))
            .and_then(Value::as_str)
        {
            Some("2") => 2,
            _ => 1,
        };
        Ok(Mount {
            path: data.path,
            kind: data.kind,
            kv_version,
        })
    }

    /// The KV mount holding `path` and its version ([`Self::mount`]); a
    /// mount of another type is an error.
    pub fn kv_mount(&self, token: &Secret, path: &str) -> Result<KvMount> {
        let mount = self.mount(token, path)?;
        if !mount.is_kv() {
            return Err(Error::Other(format!(
                "{path} is on a {:?} mount ({}), not a KV mount",
                mount.kind, mount.path
            )));
        }
        Ok(mount.kv())
    }

    /// Reads the latest version of a KV secret. `None` when it does not
    /// exist or its latest version is deleted or destroyed.
    pub fn kv_read(
        &self,
        token: &Secret,
        mount: &KvMount,
        rel: &str,
    ) -> Result<Option<Map<String, Value>>> {
        self.kv_read_version(token, mount, rel, None)
    }

    /// Reads `version` of a KV v2 secret (`None` or 0: the latest; a KV v1
    /// mount takes no version). `None` when it does not exist or that
    /// version is deleted or destroyed.
    pub fn kv_read_version(
        &self,
        token: &Secret,
        mount: &KvMount,
        rel: &str,
        version: Option<u64>,
    ) -> Result<Option<Map<String, Value>>> {
        let url = match (mount.version, version) {
            (2, None) => format!("/v1/{}data/{}", encode_path(&mount.path), encode_path(rel)),
            (2, Some(v)) => format!(
                "/v1/{}data/{}?version={v}",
                encode_path(&mount.path),
                encode_path(rel)
            ),
            (_, None) => format!("/v1/{}{}", encode_path(&mount.path), encode_path(rel)),
            (_, Some(_)) => {
                return Err(Error::Other(format!(
                    "{} is a KV v1 mount, which keeps no versions",
                    mount.path
                )))
            }
        };
        let what = format!("read {}{rel}", mount.path);
        let resp = self.get_kv(token, &url, KV_READ_LIMIT)?;
        if resp.status == 404 {
            let v = vault_404(&resp, &what)?;
            // KV v2 answers a deleted or destroyed version with its
            // metadata and `data.data: null`; anything else is refused above.
            return match (v.get("errors"), mount.version, &v["data"]) {
                (Some(_), _, _) => Ok(None),
                (None, 2, Value::Object(d))
                    if d.get("data") == Some(&Value::Null)
                        && d.get("metadata").is_some_and(Value::is_object) =>
                {
                    Ok(None)
                }
                _ => Err(refused_404(&resp, &what)),
            };
        }
        let env: Envelope<Value> = resp.json(&what)?;
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

    /// Keys directly under a KV folder; sub-folders end with `/`. Vault's
    /// own answer for an empty or missing folder (404 `{"errors":[]}`, no
    /// warning) is an empty list; every other 404 (an unknown namespace, a
    /// versioned-path warning, a gateway's page) and a 200 answer without
    /// `data.keys` are errors: an empty list is what prune acts on.
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
        let what = format!("list {}{rel}/", mount.path);
        let resp = self.get_kv(token, &url, KV_LIST_LIMIT)?;
        if resp.status == 404 {
            return match vault_404(&resp, &what)?.get("errors") {
                Some(_) => Ok(Vec::new()),
                None => Err(refused_404(&resp, &what)),
            };
        }
        #[derive(Deserialize)]
        struct Keys {
            keys: Option<Vec<String>>,
        }
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

/// What a KV value becomes as bytes, the same for every way we deliver it
/// (Secret, file, environment variable): a string as it is, a string
/// starting with `base64:` decoded (standard alphabet, padded, line breaks
/// skipped, as the Go synchronizer's decoder), anything else (numbers,
/// booleans, objects, null) as compact JSON, where the Go tool dropped it.
pub fn value_bytes(value: &Value) -> std::result::Result<Vec<u8>, &'static str> {
    match value {
        Value::String(s) => match s.strip_prefix("base64:") {
            Some(b64) => base64::decode(b64).ok_or("invalid base64 after \"base64:\""),
            None => Ok(s.clone().into_bytes()),
        },
        other => Ok(other.to_string().into_bytes()),
    }
}

/// A 404 from a KV path that may be Vault's own "nothing there": the
/// parsed body when it is JSON with `"errors": []` and no warning, or an
/// envelope without errors or warnings (a deleted KV v2 version; the
/// caller checks its shape). Anything else is an error saying what was
/// answered (api-facts.md lists the shapes).
fn vault_404(resp: &Response, what: &str) -> Result<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(&resp.body) else {
        return Err(refused_404(resp, what));
    };
    let errors = v.get("errors").map(|e| e.as_array().map(Vec::len));
    let warned = v
        .get("warnings")
        .and_then(Value::as_array)
        .is_some_and(|w| !w.is_empty());
    match errors {
        _ if warned => Err(refused_404(resp, what)),
        Some(Some(0)) => Ok(v),
        None if v.get("data").is_some_and(Value::is_object) => Ok(v),
        _ => Err(refused_404(resp, what)),
    }
}

/// The one-line error for a 404 that is not an empty or missing path:
/// Vault's errors and warnings, else the start of the body.
fn refused_404(resp: &Response, what: &str) -> Error {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let texts = |key: &str| -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut said: Vec<String> = texts("errors");
    said.extend(
        texts("warnings")
            .into_iter()
            .map(|w| format!("warning: {w}")),
    );
    let said = if said.is_empty() {
        let text = String::from_utf8_lossy(&resp.body);
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.chars().count() {
            0 => "an empty body".to_string(),
            n if n > 200 => format!("{:?}...", text.chars().take(200).collect::<String>()),
            _ => format!("{text:?}"),
        }
    } else {
        said.join("; ")
    };
    Error::Other(format!(
        "{what}: Vault answered 404: {said}; that is not an empty or missing path, so nothing is written or deleted"
    ))
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
    fn only_vaults_own_404_is_nothing_there() {
        let answer = |body: &str| Response {
            status: 404,
            body: body.as_bytes().to_vec(),
        };
        assert!(vault_404(&answer(r#"{"errors":[]}"#), "list x/").is_ok());
        let deleted =
            r#"{"request_id":"r","data":{"data":null,"metadata":{"version":3}},"warnings":null}"#;
        assert!(vault_404(&answer(deleted), "read x").is_ok());
        for (body, said) in [
            (
                r#"{"errors":["namespace not found"]}"#,
                "namespace not found",
            ),
            (
                r#"{"data":null,"warnings":["Invalid path for a versioned K/V secrets engine."]}"#,
                "warning: Invalid path for a versioned K/V secrets engine.",
            ),
            (
                "<html>\n<body>nginx</body></html>",
                "\"<html> <body>nginx</body></html>\"",
            ),
            ("", "an empty body"),
            ("{}", "\"{}\""),
        ] {
            let err = vault_404(&answer(body), "list x/").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("list x/: Vault answered 404: {said}; ")),
                "{body}: {err}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}

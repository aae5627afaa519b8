//! KV secrets, version 1 and 2: which mount holds a path, reading the
//! latest version of a secret, listing a folder.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Envelope, VaultClient, AUTH_LIMIT, KV_LIST_LIMIT, KV_READ_LIMIT};
use crate::error::{Error, Result};
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

impl VaultClient {
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
}

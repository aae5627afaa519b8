//! The in-cluster Kubernetes client: the pod's service-account token and
//! CA, and the few Secret calls the synchronizer makes. The token file is
//! re-read when it changes and after a 401, because projected tokens rotate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{KubeSettings, TlsSettings};
use crate::error::{Error, Result};
use crate::http::{HttpClient, Method, Request, Response, Retry};
use crate::secret::Secret;

/// Kubernetes calls are retried a few times on 429 and 5xx.
const RETRIES: u32 = 4;
/// Secrets per list page: large enough that a namespace of a few thousand
/// Secrets costs one call (metadata only, about 300 bytes each).
const PAGE: usize = 5000;
/// Answer limit of one list page, enforced while reading: 5000
/// metadata-only items of about 300 bytes are 1.5 MB. A page over 16 MiB
/// (large annotations, up to 256 KiB each, or Secrets with their data of up
/// to 1 MiB) is asked again ten times smaller, down to one item a page.
const LIST_LIMIT: u64 = 16 * 1024 * 1024;

pub struct KubeClient {
    http: HttpClient,
    token_path: PathBuf,
    token: Mutex<Option<(Secret, Option<SystemTime>)>>,
    namespace: String,
}

/// What the synchronizer needs to know about an existing Secret.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecretMeta {
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default, rename = "resourceVersion")]
    pub resource_version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes sends `null` for empty lists and maps.
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Secret's name and decoded data, `None` if a value is not valid base64.
#[derive(Clone, Debug)]
pub struct SecretData {
    pub name: String,
    pub data: Option<BTreeMap<String, Vec<u8>>>,
}

/// The `data` of a Secret as the API returns it (base64 values), decoded.
pub fn decode_data(data: &BTreeMap<String, String>) -> Option<BTreeMap<String, Vec<u8>>> {
    data.iter()
        .map(|(k, v)| Some((k.clone(), crate::base64::decode(v)?)))
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    Done,
    /// 409: the Secret exists (create) or changed since it was read (update).
    Conflict,
}

impl KubeClient {
    pub fn new(settings: &KubeSettings) -> Result<Self> {
        let tls = TlsSettings {
            ca_file: Some(settings.ca_path.clone()),
            ..TlsSettings::default()
        };
        Ok(KubeClient {
            http: HttpClient::new(&settings.base_url, &tls, None, settings.timeout, Vec::new())?,
            token_path: settings.token_path.clone(),
            token: Mutex::new(None),
            namespace: settings.namespace.clone(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn bearer(&self, force: bool) -> Result<String> {
        let mtime = std::fs::metadata(&self.token_path)
            .and_then(|m| m.modified())
            .ok();
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, seen)) = cached.as_ref() {
            if !force && *seen == mtime {
                return Ok(format!("Bearer {}", token.expose()));
            }
        }
        let token = crate::fs::read_credential(
            &self.token_path,
            "Kubernetes token",
            crate::fs::Links::Follow,
        )?
        .ok_or_else(|| {
            Error::Other(format!(
                "Kubernetes token {} is empty",
                self.token_path.display()
            ))
        })?;
        let header = format!("Bearer {}", token.expose());
        *cached = Some((token, mtime));
        Ok(header)
    }

    fn call(&self, mut req: Request<'_>) -> Result<Response> {
        let n = req.headers.len();
        req.headers.push(("Authorization", self.bearer(false)?));
        match self.http.send(&req, Retry::Times(RETRIES)) {
            Err(Error::Api { status: 401, .. }) => {
                req.headers[n].1 = self.bearer(true)?;
                self.http.send(&req, Retry::Times(RETRIES))
            }
            other => other,
        }
    }

    fn secrets_path(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets", self.namespace)
    }

    fn secret_path(&self, name: &str) -> String {
        format!("{}/{name}", self.secrets_path())
    }

    /// Metadata of every Secret in the namespace (no data: memory stays
    /// proportional to our own Secrets, not the namespace's).
    pub fn list_secret_metadata(&self) -> Result<Vec<SecretMeta>> {
        #[derive(Deserialize)]
        struct Item {
            metadata: SecretMeta,
        }
        self.list_pages::<Item>(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
            None,
        )
        .map(|items| items.into_iter().map(|i| i.metadata).collect())
    }

    /// Name and decoded data of the Secrets matching `selector` (a label
    /// selector such as `a=b,c=d`), data and all: callers select only their
    /// own Secrets, so large foreign ones (Helm releases) are never loaded.
    /// A value that is not base64 becomes `None` (it cannot equal anything
    /// we would write).
    pub fn list_secret_data(&self, selector: &str) -> Result<Vec<SecretData>> {
        #[derive(Deserialize)]
        struct Meta {
            name: String,
        }
        #[derive(Deserialize)]
        struct Item {
            metadata: Meta,
            #[serde(default, deserialize_with = "null_as_default")]
            data: BTreeMap<String, String>,
        }
        let items = self.list_pages::<Item>("application/json", Some(selector))?;
        Ok(items
            .into_iter()
            .map(|i| SecretData {
                name: i.metadata.name,
                data: decode_data(&i.data),
            })
            .collect())
    }

    /// Every page of a Secret list, [`PAGE`] items at a time (fewer when a
    /// page is over [`LIST_LIMIT`]).
    fn list_pages<T: serde::de::DeserializeOwned>(
        &self,
        accept: &str,
        selector: Option<&str>,
    ) -> Result<Vec<T>> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(default, rename = "continue")]
            cont: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(bound = "T: serde::de::DeserializeOwned")]
        struct List<T> {
            #[serde(default, deserialize_with = "null_as_default")]
            items: Vec<T>,
            #[serde(default)]
            metadata: Option<ListMeta>,
        }
        let query = |s: &str| crate::url::encode_path(s).replace('/', "%2F");
        let mut all = Vec::new();
        let mut cont: Option<String> = None;
        let mut page = PAGE;
        loop {
            let mut path = format!("{}?limit={page}", self.secrets_path());
            if let Some(sel) = selector {
                path.push_str("&labelSelector=");
                path.push_str(&query(sel));
            }
            if let Some(c) = &cont {
                path.push_str("&continue=");
                path.push_str(&query(c));
            }
            let resp = self.call(
                Request::new(Method::Get, &path)
                    .header("Accept", accept)
                    .limit(LIST_LIMIT),
            );
            let resp = match resp {
                Err(Error::TooLarge { .. }) if page > 1 => {
                    page = (page / 10).max(1);
                    continue;
                }
                other => other?,
            };
            let list: List<T> = resp.json("list secrets")?;
            all.extend(list.items);
            cont = list.metadata.and_then(|m| m.cont).filter(|c| !c.is_empty());
            if cont.is_none() {
                return Ok(all);
            }
        }
    }

    pub fn get_secret(&self, name: &str) -> Result<Option<Value>> {
        let path = self.secret_path(name);
        match self.call(Request::new(Method::Get, &path)) {
            Ok(resp) => resp.json(format!("get secret {name}")).map(Some),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn create_secret(&self, secret: &Value) -> Result<Write> {
        let path = self.secrets_path();
        match self.call(Request::new(Method::Post, &path).json(secret)) {
            Ok(_) => Ok(Write::Done),
            Err(Error::Api { status: 409, .. }) => Ok(Write::Conflict),
            Err(e) => Err(e),
        }
    }

    /// PUT with the `metadata.resourceVersion` inside `secret`: a Secret
    /// changed since it was read gives [`Write::Conflict`], never a blind overwrite.
    pub fn replace_secret(&self, name: &str, secret: &Value) -> Result<Write> {
        let path = self.secret_path(name);
        match self.call(Request::new(Method::Put, &path).json(secret)) {
            Ok(_) => Ok(Write::Done),
            Err(Error::Api { status: 409, .. }) => Ok(Write::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Deletes only the Secret with this uid; already gone is fine.
    pub fn delete_secret(&self, name: &str, uid: &str) -> Result<()> {
        let path = self.secret_path(name);
        let body = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": { "uid": uid },
        });
        match self.call(Request::new(Method::Delete, &path).json(&body)) {
            Ok(_) | Err(Error::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

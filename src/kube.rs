//! The in-cluster Kubernetes client: the pod's service-account token and
//! CA, the few Secret calls the synchronizer makes, and the Event calls of
//! [`crate::events`]. The token file is re-read when it changes and after a
//! 401, because projected tokens rotate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{KubeSettings, TlsSettings};
use crate::error::{Error, Result};
use crate::http::{HttpClient, Method, Request, Response, Retry};
use crate::secret::Secret;

/// Kubernetes calls are retried a few times on 429 and 5xx.
const RETRIES: u32 = 4;
/// Metadata-only Secrets per list page: a namespace of a thousand Secrets
/// (about 300 bytes each) costs one call.
const META_PAGE: usize = 1000;
/// Answer limit of a metadata page, enforced while reading. A page over it
/// (annotations of up to 256 KiB each, such as kubectl's
/// last-applied-configuration) is asked again four times smaller, down to
/// one item a page: memory follows this limit, not the namespace.
const META_LIMIT: u64 = 4 * 1024 * 1024;
/// Secrets with their data per list page (the synchronizer's own, for
/// their digests): 100 small ones a call.
const DATA_PAGE: usize = 100;
/// Answer limit of a page with data: a Secret holds up to 1 MiB (1.4 MB as
/// base64), so pages of large Secrets shrink to six a page (100, 25, 6).
const DATA_LIMIT: u64 = 9 * 1024 * 1024;

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

/// A Secret's data, decoded: key to bytes.
pub type SecretBytes = BTreeMap<String, Vec<u8>>;

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
            // Its ca.crt comes from the service-account directory, not
            // VAULT_CACERT: errors say so.
            ca_file_source: Some("KUBERNETES_SERVICEACCOUNT_DIR"),
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

    /// Metadata of every Secret in the namespace, without data and with
    /// only the annotations named in `keep`: memory stays proportional to
    /// the namespace's Secret count, not to what others store in them.
    pub fn list_secret_metadata(&self, keep: &[&str]) -> Result<Vec<SecretMeta>> {
        #[derive(Deserialize)]
        struct Item {
            metadata: SecretMeta,
        }
        let mut all = Vec::new();
        self.list_pages::<Item>(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
            None,
            (META_PAGE, META_LIMIT),
            &mut |item| {
                let mut meta = item.metadata;
                meta.annotations.retain(|k, _| keep.contains(&k.as_str()));
                all.push(meta);
            },
        )?;
        Ok(all)
    }

    /// Name and `digest` of the data of each Secret matching `selector` (a
    /// label selector such as `a=b,!c`), a page at a time: only one page of
    /// data is in memory, whatever the Secrets hold. A value that is not
    /// base64 gives `None` (it cannot equal anything we would write).
    pub fn list_secret_digests(
        &self,
        selector: &str,
        digest: &dyn Fn(&SecretBytes) -> String,
    ) -> Result<Vec<(String, Option<String>)>> {
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
        let mut all = Vec::new();
        self.list_pages::<Item>(
            "application/json",
            Some(selector),
            (DATA_PAGE, DATA_LIMIT),
            &mut |item| {
                let digest = decode_data(&item.data).map(|d| digest(&d));
                all.push((item.metadata.name, digest));
            },
        )?;
        Ok(all)
    }

    /// An object of the namespace by its API path below the namespace
    /// (`pods/NAME`, `apps/v1` objects under `/apis`); `None` if it does not exist.
    pub fn get_object(&self, path: &str) -> Result<Option<Value>> {
        match self.call(Request::new(Method::Get, path).limit(META_LIMIT)) {
            Ok(resp) => resp.json(format!("get {path}")).map(Some),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `/api/v1/namespaces/NS/<resource>` or `/apis/<group>/namespaces/NS/<resource>`.
    pub fn namespaced(&self, group: &str, resource: &str) -> String {
        match group {
            "v1" => format!("/api/v1/namespaces/{}/{resource}", self.namespace),
            g => format!("/apis/{g}/namespaces/{}/{resource}", self.namespace),
        }
    }

    /// Every page of a Secret list, `size.0` items at a time (four times
    /// fewer each time a page is over `size.1` bytes), each item handed to
    /// `each` as soon as its page is read.
    fn list_pages<T: serde::de::DeserializeOwned>(
        &self,
        accept: &str,
        selector: Option<&str>,
        size: (usize, u64),
        each: &mut dyn FnMut(T),
    ) -> Result<()> {
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
        let (mut page, limit) = size;
        let mut cont: Option<String> = None;
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
                    .limit(limit),
            );
            let resp = match resp {
                Err(Error::TooLarge { .. }) if page > 1 => {
                    page = (page / 4).max(1);
                    continue;
                }
                other => other?,
            };
            let list: List<T> = resp.json("list secrets")?;
            drop(resp);
            list.items.into_iter().for_each(&mut *each);
            cont = list.metadata.and_then(|m| m.cont).filter(|c| !c.is_empty());
            if cont.is_none() {
                return Ok(());
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

    /// Deletes the Secret only as it was decided on: this uid and this
    /// resourceVersion, so a Secret changed since (detached, taken over,
    /// edited) gives [`Write::Conflict`] and stays. Already gone is done.
    pub fn delete_secret(&self, name: &str, uid: &str, resource_version: &str) -> Result<Write> {
        let path = self.secret_path(name);
        let body = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": { "uid": uid, "resourceVersion": resource_version },
        });
        match self.call(Request::new(Method::Delete, &path).json(&body)) {
            Ok(_) | Err(Error::Api { status: 404, .. }) => Ok(Write::Done),
            Err(Error::Api { status: 409, .. }) => Ok(Write::Conflict),
            Err(e) => Err(e),
        }
    }

    fn events_path(&self) -> String {
        format!(
            "/apis/events.k8s.io/v1/namespaces/{}/events",
            self.namespace
        )
    }

    /// Creates `event` (an `events.k8s.io/v1` Event) in the namespace; no
    /// try runs past `deadline`.
    pub fn create_event(&self, event: &Value, deadline: Instant) -> Result<()> {
        let path = self.events_path();
        self.call(
            Request::new(Method::Post, &path)
                .json(event)
                .deadline(deadline),
        )
        .map(drop)
    }

    /// Merges `patch` (JSON merge patch, RFC 7386) into Event `name`: a
    /// series' `count` and `lastObservedTime`. A 404 (the Event expired) is
    /// the caller's to handle.
    pub fn patch_event(&self, name: &str, patch: &Value, deadline: Instant) -> Result<()> {
        let path = format!("{}/{name}", self.events_path());
        self.call(
            Request::new(Method::Patch, &path)
                .body(
                    "application/merge-patch+json",
                    patch.to_string().into_bytes(),
                )
                .deadline(deadline),
        )
        .map(drop)
    }

    /// Whether the service account may `verb` the `resource` of API
    /// `group` in the namespace: a SelfSubjectAccessReview, which every
    /// authenticated user may create (ClusterRole `system:basic-user`).
    pub fn may(&self, verb: &str, group: &str, resource: &str, deadline: Instant) -> Result<bool> {
        #[derive(Deserialize)]
        struct Status {
            #[serde(default)]
            allowed: bool,
        }
        #[derive(Deserialize)]
        struct Review {
            status: Status,
        }
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "namespace": self.namespace, "verb": verb, "group": group, "resource": resource,
            }},
        });
        let resp = self.call(
            Request::new(
                Method::Post,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            )
            .json(&review)
            .deadline(deadline),
        )?;
        Ok(resp
            .json::<Review>("self subject access review")?
            .status
            .allowed)
    }
}

//! The plan: read every Vault secret the mapping lists, then check every
//! name, key, value and size locally. The result ([`Plan`]) is complete and
//! valid, or there is none: a failed read or an invalid name means the sinks
//! write and delete nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};

use crate::config::{SyncTarget, SynchronizerConfig};
use crate::error::{Error, Result};
use crate::log;
use crate::mapping::{self, Target};
use crate::parallel::parallel;
use crate::secret::Secret;
use crate::vault::{kv, KvMount, VaultClient};

/// Annotation holding the SHA-256 of the data we last wrote.
pub const CHECKSUM_ANNOTATION: &str = "vault-kubernetes/sha256";

/// One Kubernetes Secret the plan wants.
#[derive(Clone, Debug)]
pub struct Desired {
    pub name: String,
    /// Vault path it comes from; the annotation's value.
    pub vault_path: String,
    pub data: BTreeMap<String, Vec<u8>>,
    pub checksum: String,
    /// The Secret's `type`: `Opaque`, or `kubernetes.io/tls` for a certificate.
    pub secret_type: &'static str,
}

/// The complete, validated result of reading Vault.
#[derive(Debug, Default)]
pub struct Plan {
    pub secrets: Vec<Desired>,
    /// Listed but not found in Vault: their Secrets are left as they are.
    pub not_found: Vec<String>,
    /// Secrets whose data the plan did not keep (over [`HELD_BUDGET`]),
    /// by name: their `data` is empty and a sink that writes them reads
    /// them again ([`Reread`]). Their checksum is known.
    pub(super) dropped: HashMap<String, Source>,
}

/// Bytes of Secret data a plan keeps in memory; the rest is read again
/// when written. Memory follows this, not what Vault holds: 60 secrets of
/// 900 KiB would be 54 MiB, near the demo's 64 MiB limit.
pub const HELD_BUDGET: usize = 8 * 1024 * 1024;

/// Secret data over this many bytes is written by fewer workers: each
/// write holds the data, its base64 request body and the Secret read back.
pub const LARGE: usize = 256 * 1024;

/// Where a secret's data is in Vault.
#[derive(Clone, Debug)]
pub struct Source {
    mount: KvMount,
    rel: String,
}

/// What a sink needs to read a dropped secret again: the same Vault, token
/// and checks as the plan.
pub struct Reread<'a> {
    pub cfg: &'a SynchronizerConfig,
    pub vault: &'a VaultClient,
    pub token: &'a Secret,
}

impl Reread<'_> {
    /// The data to write for `want` and its checksum: kept by the plan, or
    /// read again and checked as the plan did. Vault may have changed in
    /// between: the checksum is then the new data's.
    pub fn data<'d>(&self, plan: &Plan, want: &'d Desired) -> Result<(Cow<'d, Data>, String)> {
        let Some(source) = plan.dropped.get(&want.name) else {
            return Ok((Cow::Borrowed(&want.data), want.checksum.clone()));
        };
        let read = self
            .vault
            .kv_read(self.token, &source.mount, &source.rel)
            .map_err(|e| e.context(format!("read {} again", want.vault_path)))?;
        let Some(read) = read else {
            return Err(Error::Other(format!(
                "vault secret {} disappeared during the run",
                want.vault_path
            )));
        };
        let data = checked(self.cfg, &want.vault_path, &read)
            .map_err(|why| Error::Other(format!("{}: {why}", want.vault_path)))?;
        let sum = checksum(&data);
        Ok((Cow::Owned(data), sum))
    }
}

/// A Secret's data: key to bytes.
pub type Data = BTreeMap<String, Vec<u8>>;

/// Vault's answer as Secret data, with the checks of [`to_secret_data`]
/// and, for Secrets, the API server's size limits.
fn checked(
    cfg: &SynchronizerConfig,
    vault_path: &str,
    read: &Map<String, Value>,
) -> std::result::Result<Data, String> {
    let data = to_secret_data(read)?;
    if matches!(cfg.target, SyncTarget::Secrets(_)) {
        api_limits(cfg, vault_path, &data)?;
    }
    Ok(data)
}

impl Plan {
    /// Whether writing `want` takes much memory: its data was not kept
    /// (it is read again), or is over [`LARGE`]. Sinks write these with
    /// [`crate::parallel::LARGE_WORKERS`] workers, the rest with more.
    pub fn is_large(&self, want: &Desired) -> bool {
        self.dropped.contains_key(&want.name)
            || want.data.values().map(Vec::len).sum::<usize>() > LARGE
    }

    /// Every name the mapping still lists, found in Vault or not: what
    /// pruning keeps.
    pub fn names(&self) -> HashSet<&str> {
        self.secrets
            .iter()
            .map(|d| d.name.as_str())
            .chain(self.not_found.iter().map(String::as_str))
            .collect()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub not_found: usize,
    pub ignored: usize,
    /// Names deleted by pruning (`deleted` of them), for the Event.
    pub pruned: Vec<String>,
    /// Names restored after an edit outside the synchronizer (counted in
    /// `updated`), for the Event.
    pub repaired: Vec<String>,
}

/// An item to read: Vault mount, path inside it, Secret name, annotation value.
struct Item {
    mount: KvMount,
    rel: String,
    name: String,
    vault_path: String,
}

/// Reads everything from Vault and validates it; no Kubernetes call.
pub fn plan(cfg: &SynchronizerConfig, vault: &VaultClient, token: &Secret) -> Result<Plan> {
    let mut items = Vec::new();
    // Leased entries are kept by `super::leased`, which adds them to the plan.
    for entry in cfg.entries.iter().filter(|e| !e.is_leased()) {
        let mount = vault
            .kv_mount(token, &entry.path)
            .map_err(|e| e.context(format!("entry {:?}", entry.raw)))?;
        let rel = mount.relative(&entry.path).to_string();
        match &entry.target {
            Target::Single { name } => items.push(Item {
                mount,
                rel,
                name: name.clone(),
                vault_path: entry.path.clone(),
            }),
            Target::Folder => {
                let keys = vault
                    .kv_list(token, &mount, &rel)
                    .map_err(|e| e.context(format!("entry {:?}", entry.raw)))?;
                for key in keys {
                    if key.ends_with('/') {
                        log::info(format!(
                            "skip sub-folder {}/{key} (only one level is synchronized)",
                            entry.path
                        ));
                        continue;
                    }
                    let child = if rel.is_empty() {
                        key.clone()
                    } else {
                        format!("{rel}/{key}")
                    };
                    items.push(Item {
                        mount: mount.clone(),
                        rel: child,
                        name: format!("{}{key}", cfg.prefix),
                        vault_path: format!("{}/{key}", entry.path),
                    });
                }
            }
        }
    }

    // Two items for one Secret (a folder key and an entry, or two
    // folders): the later wins, as the Go images wrote them in order.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        last.insert(&item.name, i);
    }
    let mut dropped = vec![false; items.len()];
    for (i, item) in items.iter().enumerate() {
        let later = last[item.name.as_str()];
        if later != i {
            dropped[i] = true;
            log::warn(format!(
                "{} and {} both give secret {}: the later ({}) is used, as in the Go images",
                item.vault_path, items[later].vault_path, item.name, items[later].vault_path
            ));
        }
    }
    let mut keep = dropped.iter().map(|d| !d);
    items.retain(|_| keep.next().unwrap_or(true));

    // Every name valid before any read result matters.
    let mut problems = Vec::new();
    for item in &items {
        if !mapping::is_dns_subdomain(&item.name) {
            problems.push(format!(
                "{}: invalid Secret name {:?} (lower-case RFC 1123 subdomain, at most 253 characters)",
                item.vault_path, item.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Other(format!(
            "invalid mapping: {}",
            problems.join("; ")
        )));
    }

    // Each answer is checked and reduced to its data on the worker that
    // read it: at most WORKERS answers are in memory at once, and the data
    // kept stays within HELD_BUDGET.
    let held = AtomicUsize::new(0);
    let results = parallel(&items, |item| {
        log::info(format!("read {} from vault", item.vault_path));
        let read = vault.kv_read(token, &item.mount, &item.rel)?;
        let Some(read) = read else { return Ok(None) };
        Ok(Some(checked(cfg, &item.vault_path, &read).map(|data| {
            let sum = checksum(&data);
            let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
            let before = held.fetch_add(size, Ordering::Relaxed);
            if before + size <= HELD_BUDGET {
                (data, sum, true)
            } else {
                held.fetch_sub(size, Ordering::Relaxed);
                (Data::new(), sum, false)
            }
        })))
    });

    let mut plan = Plan::default();
    let mut errors = Vec::new();
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(Some(Ok((data, checksum, kept)))) => {
                if !kept {
                    plan.dropped.insert(
                        item.name.clone(),
                        Source {
                            mount: item.mount.clone(),
                            rel: item.rel.clone(),
                        },
                    );
                }
                plan.secrets.push(Desired {
                    name: item.name.clone(),
                    vault_path: item.vault_path.clone(),
                    data,
                    checksum,
                    secret_type: "Opaque",
                });
            }
            Ok(Some(Err(why))) => errors.push(format!("{}: {why}", item.vault_path)),
            Ok(None) => {
                log::warn(format!(
                    "vault secret {} not found (or its latest version is deleted); keeping secret {} as it is",
                    item.vault_path, item.name
                ));
                plan.not_found.push(item.name.clone());
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => errors.push(format!("read {}: {e}", item.vault_path)),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Other(format!(
            "nothing written: {}",
            errors.join("; ")
        )));
    }
    Ok(plan)
}

/// The largest total of a Secret's data values, in bytes, that the API
/// server stores (`MaxSecretSize`; `ValidateSecret` sums the decoded value
/// lengths, keys not counted).
pub const MAX_SECRET_DATA: usize = 1024 * 1024;
/// The largest total of an object's annotation keys and values
/// (`TotalAnnotationSizeLimitB` of `ValidateAnnotations`).
pub const MAX_ANNOTATIONS: usize = 256 * 1024;

/// What the API server would refuse about a Secret we are about to write,
/// checked in the plan so a refused value means nothing written. Names,
/// keys and labels are checked elsewhere (mapping, [`to_secret_data`],
/// config); this adds the sizes.
fn api_limits(
    cfg: &SynchronizerConfig,
    vault_path: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> std::result::Result<(), String> {
    let total: usize = data.values().map(Vec::len).sum();
    if total > MAX_SECRET_DATA {
        return Err(format!(
            "values total {total} bytes, more than the {MAX_SECRET_DATA} bytes (1 MiB) a Kubernetes Secret holds"
        ));
    }
    // Ours: the path annotation, the checksum (64 hex digits) and the owner.
    let annotations = cfg.annotation.len()
        + vault_path.len()
        + CHECKSUM_ANNOTATION.len()
        + 64
        + super::owner::OWNER_ANNOTATION.len()
        + crate::config::MAX_ID_LEN;
    if annotations > MAX_ANNOTATIONS {
        return Err(format!(
            "the annotations would total {annotations} bytes, more than the {MAX_ANNOTATIONS} Kubernetes allows"
        ));
    }
    Ok(())
}

/// Vault values to Secret bytes ([`kv::value_bytes`]: strings as they
/// are, `base64:` decoded, anything else as compact JSON), keys checked.
pub fn to_secret_data(
    data: &Map<String, Value>,
) -> std::result::Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for (key, value) in data {
        if !mapping::is_data_key(key) {
            return Err(format!(
                "invalid key {key:?} (allowed: letters, digits, - _ .)"
            ));
        }
        let bytes = kv::value_bytes(value).map_err(|why| format!("key {key:?}: {why}"))?;
        out.insert(key.clone(), bytes);
    }
    Ok(out)
}

/// SHA-256 of a Secret's data, in hex: what the checksum annotation
/// records and what live data is compared by.
pub fn checksum(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut digest = Digest::new();
    for (k, v) in data {
        digest.update(k, v);
    }
    digest.finish()
}

/// [`checksum`] a key at a time, keys in sorted order: a sink compares
/// what it holds without holding all of it.
pub struct Digest(ring::digest::Context);

impl Digest {
    pub fn new() -> Self {
        Digest(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, key: &str, value: &[u8]) {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        self.0.update(&(key.len() as u64).to_be_bytes());
        self.0.update(key.as_bytes());
        self.0.update(&(value.len() as u64).to_be_bytes());
        self.0.update(value);
    }

    pub fn finish(self) -> String {
        self.0
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_bytes_or_json() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"s":"text","b":"base64:aGk=","n":42,"t":true,"o":{"a":[1,"x"]},"z":null}"#,
        )
        .unwrap();
        let out = to_secret_data(&data).unwrap();
        assert_eq!(out["s"], b"text");
        assert_eq!(out["b"], b"hi");
        assert_eq!(out["n"], b"42");
        assert_eq!(out["t"], b"true");
        assert_eq!(out["o"], br#"{"a":[1,"x"]}"#);
        assert_eq!(out["z"], b"null");
    }

    #[test]
    fn bad_values_and_keys_are_refused() {
        let bad: Map<String, Value> = serde_json::from_str(r#"{"k":"base64:!!"}"#).unwrap();
        assert!(to_secret_data(&bad).unwrap_err().contains("base64"));
        let bad: Map<String, Value> = serde_json::from_str(r#"{"a/b":"x"}"#).unwrap();
        assert!(to_secret_data(&bad).unwrap_err().contains("invalid key"));
    }

    #[test]
    fn checksum_is_unambiguous() {
        let a = BTreeMap::from([("ab".to_string(), b"c".to_vec())]);
        let b = BTreeMap::from([("a".to_string(), b"bc".to_vec())]);
        assert_ne!(checksum(&a), checksum(&b));
        assert_eq!(checksum(&a).len(), 64);
    }
}

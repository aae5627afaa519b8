//! The plan: read every Vault secret the mapping lists, then check every
//! name, key, value and size locally. The result ([`Plan`]) is complete and
//! valid, or there is none: a failed read or an invalid name means the sinks
//! write and delete nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::parallel::parallel;
use crate::config::{SyncTarget, SynchronizerConfig};
use crate::error::{Error, Result};
use crate::log;
use crate::mapping::{self, Target};
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
}

impl Plan {
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

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub not_found: usize,
    pub ignored: usize,
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

    let results = parallel(&items, |item| {
        log::info(format!("read {} from vault", item.vault_path));
        vault.kv_read(token, &item.mount, &item.rel)
    });

    let mut plan = Plan::default();
    let mut errors = Vec::new();
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(Some(data)) => match to_secret_data(&data).and_then(|data| {
                if matches!(cfg.target, SyncTarget::Secrets(_)) {
                    api_limits(cfg, &item.vault_path, &data)?;
                }
                Ok(data)
            }) {
                Ok(data) => {
                    let checksum = checksum(&data);
                    plan.secrets.push(Desired {
                        name: item.name.clone(),
                        vault_path: item.vault_path.clone(),
                        data,
                        checksum,
                        secret_type: "Opaque",
                    });
                }
                Err(why) => errors.push(format!("{}: {why}", item.vault_path)),
            },
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
    // Ours: the path annotation and the checksum (64 hex digits).
    let annotations = cfg.annotation.len() + vault_path.len() + CHECKSUM_ANNOTATION.len() + 64;
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

pub fn checksum(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (k, v) in data {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        ctx.update(&(k.len() as u64).to_be_bytes());
        ctx.update(k.as_bytes());
        ctx.update(&(v.len() as u64).to_be_bytes());
        ctx.update(v);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

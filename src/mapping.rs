//! `VAULT_SECRETS` syntax and Kubernetes name rules: which Vault path
//! becomes which Secret, and whether a name, key or label is valid, checked
//! locally before anything is written.
//!
//! - `secret/k8s/first` → Secret `first` (last path segment)
//! - `secret/k8s/first:third` → Secret `third`
//! - `secret/k8s/` → one Secret per key listed under that folder
//!
//! `SECRET_PREFIX` is prepended to every name.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One Vault secret to one Kubernetes Secret of this (prefixed) name.
    Single { name: String },
    /// Every secret directly under a Vault folder, named after its key.
    Folder,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry as written in `VAULT_SECRETS`, for messages.
    pub raw: String,
    /// Vault path, without leading slash; folders without trailing slash.
    pub path: String,
    pub target: Target,
}

/// Parses `VAULT_SECRETS`: comma-separated, trimmed, empty entries skipped.
/// Two entries that give the same Secret name: the later one is kept, as
/// the Go images (which wrote both, the later last) ended up with, and a
/// warning naming both is returned beside the entries.
pub fn parse_entries(value: &str, prefix: &str) -> Result<(Vec<Entry>, Vec<String>)> {
    const VAR: &str = "VAULT_SECRETS";
    let mut entries: Vec<Entry> = Vec::new();
    let mut warnings = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (path, name) = match raw.rsplit_once(':') {
            Some((p, n)) => (p.trim(), Some(n.trim())),
            None => (raw, None),
        };
        let path = path.trim_start_matches('/');
        let is_folder = path.ends_with('/');
        let path = path.trim_end_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(Error::config(
                VAR,
                format!("invalid Vault path in entry {raw:?}"),
            ));
        }
        let target = match (is_folder, name) {
            (true, Some(_)) => {
                return Err(Error::config(
                    VAR,
                    format!("entry {raw:?}: a folder entry (ending in /) cannot take a :name"),
                ))
            }
            (true, None) => Target::Folder,
            (false, Some("")) => {
                return Err(Error::config(
                    VAR,
                    format!("entry {raw:?}: empty name after ':'"),
                ))
            }
            (false, Some(n)) => Target::Single {
                name: format!("{prefix}{n}"),
            },
            (false, None) => Target::Single {
                name: format!("{prefix}{}", path.rsplit('/').next().unwrap_or(path)),
            },
        };
        let entry = Entry {
            raw: raw.to_string(),
            path: path.to_string(),
            target,
        };
        if let Some(at) = entries.iter().position(|e| {
            e.target == entry.target
                && (matches!(e.target, Target::Single { .. }) || e.path == entry.path)
        }) {
            let earlier = entries.remove(at);
            warnings.push(match &entry.target {
                Target::Single { name } => format!(
                    "VAULT_SECRETS: {} and {} both give secret {name}: the later ({}) is used, as in the Go images",
                    earlier.path, entry.path, entry.path
                ),
                Target::Folder => format!("VAULT_SECRETS: folder {}/ is listed twice", entry.path),
            });
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(Error::config(VAR, "no entries"));
    }
    Ok((entries, warnings))
}

/// Label keys and values, in the order given.
pub type Labels = Vec<(String, String)>;

/// `k=v,k2=v2`, trimmed, validated as Kubernetes labels. As in the Go
/// images, an entry without `=` is ignored and a key given twice takes the
/// later value; each returns a warning beside the labels. Invalid keys and
/// values are errors (the API server would refuse every Secret).
pub fn parse_labels(value: &str) -> Result<(Labels, Vec<String>)> {
    const VAR: &str = "SYNCHRONIZER_LABELS";
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            warnings.push(format!(
                "{VAR}: ignoring {pair:?}: not key=value (the Go images ignored it too)"
            ));
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if !is_qualified_key(k) {
            return Err(Error::config(VAR, format!("invalid label key {k:?}")));
        }
        if !is_label_value(v) {
            return Err(Error::config(
                VAR,
                format!("invalid label value {v:?} for {k:?}: at most 63 characters, alphanumeric at both ends, - _ . inside"),
            ));
        }
        if let Some(at) = labels.iter().position(|(seen, _)| seen == k) {
            let (_, earlier) = labels.remove(at);
            warnings.push(format!(
                "{VAR}: label {k:?} given twice: the later value {v:?} is used (not {earlier:?}), as in the Go images"
            ));
        }
        labels.push((k.to_string(), v.to_string()));
    }
    Ok((labels, warnings))
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// RFC 1123 subdomain, the rule for Secret names: dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Secret data keys: `[-._a-zA-Z0-9]+`, at most 253, not `.`/`..`, not starting `..`.
pub fn is_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && !s.starts_with("..")
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

/// Label value: empty, or at most 63 of `[A-Za-z0-9-_.]` with alphanumerics at both ends.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// Label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name a
/// label-value-like string of 1..=63.
pub fn is_qualified_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(name: &str) -> Target {
        Target::Single { name: name.into() }
    }

    #[test]
    fn three_forms_with_prefix_and_whitespace() {
        let (e, warnings) = parse_entries(
            " secret/k8s/first , secret/k8s/first:third,, /secret/k8s/ ",
            "p-",
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].path.as_str(), &e[0].target),
            ("secret/k8s/first", &single("p-first"))
        );
        assert_eq!(
            (e[1].path.as_str(), &e[1].target),
            ("secret/k8s/first", &single("p-third"))
        );
        assert_eq!(
            (e[2].path.as_str(), &e[2].target),
            ("secret/k8s", &Target::Folder)
        );
    }

    #[test]
    fn duplicate_names_keep_the_later_entry_and_warn_with_both_paths() {
        // go-tools.md, "Measured side by side": Go exits 0, the later wins.
        let (e, warnings) = parse_entries("secret/k8s/first,kv1/k8s/first", "").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "kv1/k8s/first");
        assert_eq!(
            warnings,
            ["VAULT_SECRETS: secret/k8s/first and kv1/k8s/first both give secret first: the later (kv1/k8s/first) is used, as in the Go images"]
        );
        let (e, warnings) = parse_entries("secret/a/y:x,secret/b/x,secret/c/", "").unwrap();
        assert_eq!(
            e.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["secret/b/x", "secret/c"]
        );
        assert_eq!(warnings.len(), 1);
        assert!(parse_entries("", "").is_err());
        assert!(parse_entries("secret/a/:x", "").is_err());
    }

    #[test]
    fn kubernetes_name_rules() {
        assert!(is_dns_subdomain("first"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("v3t_first")); // the Go demo's own prefix
        assert!(!is_dns_subdomain("First"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert!(is_data_key("tls.crt") && is_data_key("A_b-1"));
        assert!(
            !is_data_key("a/b") && !is_data_key("..x") && !is_data_key(".") && !is_data_key("")
        );
        assert!(is_qualified_key("vault-secret"));
        assert!(is_qualified_key("example.com/vault-secret"));
        assert!(!is_qualified_key("bad key"));
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(
            parse_labels(" team = a , app=b").unwrap(),
            (
                vec![("team".into(), "a".into()), ("app".into(), "b".into())],
                vec![]
            )
        );
        assert!(parse_labels("a=-bad").is_err());
    }

    #[test]
    fn labels_accept_the_go_readme_example() {
        // go-tools.md, "Measured side by side": k1=v1, k2=v2, k3="" and k4 ignored.
        let (labels, warnings) = parse_labels("k1=v1,k2=v2,k3=,k4").unwrap();
        assert_eq!(
            labels,
            [("k1", "v1"), ("k2", "v2"), ("k3", "")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            warnings,
            ["SYNCHRONIZER_LABELS: ignoring \"k4\": not key=value (the Go images ignored it too)"]
        );
        let (labels, warnings) = parse_labels("a=1,a=2").unwrap();
        assert_eq!(labels, [("a".to_string(), "2".to_string())]);
        assert_eq!(warnings.len(), 1);
    }
}

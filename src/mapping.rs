//! `VAULT_SECRETS` syntax and Kubernetes name rules: which Vault path
//! becomes which Secret, and whether a name, key or label is valid, checked
//! locally before anything is written.
//!
//! - `secret/k8s/first` → Secret `first` (last path segment)
//! - `secret/k8s/first:third` → Secret `third`
//! - `secret/k8s/` → one Secret per key listed under that folder
//! - `creds:database/creds/app` → leased credentials (a GET minting new ones,
//!   as the database engine's), kept renewed: Secret `app`, one key per field
//! - `cert:pki/issue/app?common_name=app.vk.test&alt_names=a.vk.test+b.vk.test&ip_sans=127.0.0.1&ttl=24h`
//!   → a certificate from the PKI engine: Secret `app` with `tls.crt`,
//!   `tls.key` and `ca.crt`, re-issued at 2/3 of its lifetime
//!
//! Leased entries take a `:name` too, after the parameters (and need one
//! when an IPv6 SAN would end the entry with `:<digits>`). Lists inside a
//! parameter are separated by `+`, as `,` separates entries.
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
    pub kind: Kind,
}

/// What an entry reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A KV secret or folder: the Go images' only kind.
    #[default]
    Kv,
    /// `creds:<path>`: credentials with a lease, new ones at each read.
    Creds,
    /// `cert:<path>?<parameters>`: a certificate from the PKI engine.
    Cert(CertRequest),
}

/// The parameters of a PKI `issue` request (Vault's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    pub common_name: String,
    pub alt_names: Vec<String>,
    pub ip_sans: Vec<std::net::IpAddr>,
    /// As given (`24h`, `3600`); Vault parses it, the configuration checks it.
    pub ttl: Option<String>,
}

impl CertRequest {
    /// The body of the `issue` request.
    pub fn params(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "common_name": self.common_name });
        if !self.alt_names.is_empty() {
            body["alt_names"] = self.alt_names.join(",").into();
        }
        if !self.ip_sans.is_empty() {
            let ips: Vec<String> = self.ip_sans.iter().map(ToString::to_string).collect();
            body["ip_sans"] = ips.join(",").into();
        }
        if let Some(ttl) = &self.ttl {
            body["ttl"] = ttl.clone().into();
        }
        body
    }

    /// The request in the entry's own syntax, canonical (fixed order).
    fn query(&self) -> String {
        let mut q = format!("common_name={}", self.common_name);
        if !self.alt_names.is_empty() {
            q += &format!("&alt_names={}", self.alt_names.join("+"));
        }
        if !self.ip_sans.is_empty() {
            let ips: Vec<String> = self.ip_sans.iter().map(ToString::to_string).collect();
            q += &format!("&ip_sans={}", ips.join("+"));
        }
        if let Some(ttl) = &self.ttl {
            q += &format!("&ttl={ttl}");
        }
        q
    }
}

impl Entry {
    /// What the sinks record as the entry's source (the annotation's value,
    /// the file target's record): the Vault path, and for a certificate its
    /// parameters, so a changed request is never taken for the delivered one.
    pub fn vault_path(&self) -> String {
        match &self.kind {
            Kind::Cert(req) => format!("{}?{}", self.path, req.query()),
            _ => self.path.clone(),
        }
    }

    pub fn is_leased(&self) -> bool {
        self.kind != Kind::Kv
    }
}

/// `creds:` or `cert:` followed by a path (a `/` after the colon: `cert:tls`
/// stays the KV path `cert` to the Secret `tls`, as it always was).
fn leased_kind(raw: &str) -> Option<(&'static str, &str)> {
    for kind in ["creds", "cert"] {
        if let Some(rest) = raw.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) {
            let path_part = rest.split([':', '?']).next().unwrap_or("");
            if path_part.contains('/') {
                return Some((kind, rest));
            }
        }
    }
    None
}

/// Parses a leased entry after its `creds:`/`cert:` prefix.
fn parse_leased(raw: &str, kind: &str, rest: &str, prefix: &str) -> Result<Entry> {
    const VAR: &str = "VAULT_SECRETS";
    let bad = |why: String| Error::config(VAR, format!("entry {raw:?}: {why}"));
    let (body, name) = match rest.rsplit_once(':') {
        Some((b, n)) => (b, Some(n.trim())),
        None => (rest, None),
    };
    let (path, query) = match body.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (body, None),
    };
    // `ip_sans=::1` at the end: is `:1` a name or the address's end?
    if let (Some(q), Some(n)) = (query, name) {
        let last = q.rsplit(['&', '+', '=']).next().unwrap_or("");
        if q.rsplit('&')
            .next()
            .is_some_and(|p| p.starts_with("ip_sans="))
            && format!("{last}:{n}").parse::<std::net::IpAddr>().is_ok()
        {
            return Err(bad(
                "an IPv6 address ends the entry: add the :name after it (or move ip_sans before another parameter)".into(),
            ));
        }
    }
    let path = path.trim().trim_start_matches('/');
    if path.is_empty()
        || path.ends_with('/')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad(format!("invalid Vault path {path:?}")));
    }
    let role = path.rsplit('/').next().unwrap_or(path);
    let name = match name {
        Some("") => return Err(bad("empty name after ':'".into())),
        Some(n) => format!("{prefix}{n}"),
        None => format!("{prefix}{role}"),
    };
    let kind = if kind == "creds" {
        if query.is_some() {
            return Err(bad("creds: entries take no parameters".into()));
        }
        Kind::Creds
    } else {
        if !path.contains("/issue/") {
            return Err(bad(format!(
                "{path:?} is not a PKI issue path (<mount>/issue/<role>)"
            )));
        }
        let mut req = CertRequest {
            common_name: String::new(),
            alt_names: Vec::new(),
            ip_sans: Vec::new(),
            ttl: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("parameter {pair:?} is not name=value")))?;
            let list = || v.split('+').map(str::trim).filter(|s| !s.is_empty());
            match k {
                "common_name" => req.common_name = v.trim().to_string(),
                "alt_names" => req.alt_names = list().map(str::to_string).collect(),
                "ip_sans" => {
                    req.ip_sans = list()
                        .map(|ip| {
                            ip.parse()
                                .map_err(|_| bad(format!("ip_sans: {ip:?} is not an IP address")))
                        })
                        .collect::<Result<_>>()?
                }
                "ttl" => req.ttl = Some(v.trim().to_string()),
                _ => {
                    return Err(bad(format!(
                        "unknown parameter {k:?} (common_name, alt_names, ip_sans, ttl)"
                    )))
                }
            }
        }
        if req.common_name.is_empty() {
            return Err(bad("a certificate needs common_name=<name>".into()));
        }
        Kind::Cert(req)
    };
    Ok(Entry {
        raw: raw.to_string(),
        path: path.to_string(),
        target: Target::Single { name },
        kind,
    })
}

/// Parses `VAULT_SECRETS`: comma-separated, trimmed, empty entries skipped.
/// Two entries that give the same Secret name: the later one is kept, as
/// the Go images (which wrote both, the later last) ended up with, and a
/// warning naming both is returned beside the entries.
///
/// Errors name `VAULT_SECRETS` and the entry: a bad path, a folder with a
/// `:name`, an empty name, or an entry whose Secret name (prefix included)
/// is not a lower-case RFC 1123 subdomain (Kubernetes' rule for Secret
/// names), all before any request. `SECRET_PREFIX` is refused when no name
/// could start with it.
pub fn parse_entries(value: &str, prefix: &str) -> Result<(Vec<Entry>, Vec<String>)> {
    const VAR: &str = "VAULT_SECRETS";
    // A name starting with the prefix ends in a key or entry name of at
    // least one character: if even "a" cannot complete it, nothing can.
    if !prefix.is_empty() && !is_dns_subdomain(&format!("{prefix}a")) {
        return Err(Error::config(
            "SECRET_PREFIX",
            format!("{prefix:?} cannot begin a Secret name, {NAME_RULE}"),
        ));
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut warnings = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((kind, rest)) = leased_kind(raw) {
            let entry = parse_leased(raw, kind, rest, prefix)?;
            push(&mut entries, &mut warnings, entry)?;
            continue;
        }
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
            kind: Kind::Kv,
        };
        push(&mut entries, &mut warnings, entry)?;
    }
    if entries.is_empty() {
        return Err(Error::config(VAR, "no entries"));
    }
    Ok((entries, warnings))
}

/// Kubernetes' rule for Secret names, for messages.
const NAME_RULE: &str =
    "not a lower-case RFC 1123 subdomain (a-z, 0-9, '-' and '.', at most 253 characters)";

/// Adds an entry; one that gives the same Secret as an earlier one replaces
/// it, with a warning naming both. A named entry's Secret name is known
/// now, so a bad one is refused here, before any request (the API server
/// would refuse it after every read); folder keys are checked once listed.
fn push(entries: &mut Vec<Entry>, warnings: &mut Vec<String>, entry: Entry) -> Result<()> {
    if let Target::Single { name } = &entry.target {
        if !is_dns_subdomain(name) {
            return Err(Error::config(
                "VAULT_SECRETS",
                format!(
                    "entry {:?} gives Secret name {name:?}, {NAME_RULE}",
                    entry.raw
                ),
            ));
        }
    }
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
    Ok(())
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
    fn bad_secret_names_are_refused_when_parsed() {
        for (value, prefix, var, shown) in [
            ("secret/k8s/Bad_Name", "", "VAULT_SECRETS", "Bad_Name"),
            ("secret/k8s/ok:Not-OK", "", "VAULT_SECRETS", "Not-OK"),
            ("secret/k8s/first:-x", "", "VAULT_SECRETS", "-x"),
            ("creds:database/creds/app:DB", "", "VAULT_SECRETS", "DB"),
            ("secret/k8s/first", "a..", "SECRET_PREFIX", "a.."),
            ("secret/k8s/", "Prefix-", "SECRET_PREFIX", "Prefix-"),
        ] {
            let e = parse_entries(value, prefix).unwrap_err().to_string();
            assert!(e.starts_with(var), "{value} {prefix}: {e}");
            assert!(e.contains(&format!("{shown:?}")), "{value} {prefix}: {e}");
        }
        let long = "a".repeat(254);
        assert!(parse_entries(&format!("secret/k8s/{long}"), "").is_err());
        // A valid prefix may end in '-' or '.': the key completes it.
        for prefix in ["", "app-", "app.", "v1-app-"] {
            assert!(
                parse_entries("secret/k8s/x,secret/k8s/", prefix).is_ok(),
                "{prefix}"
            );
        }
    }

    #[test]
    fn leased_entries() {
        let (e, _) = parse_entries(
            "creds:database/creds/app:db, cert:pki/issue/web?common_name=web.vk.test&alt_names=a.vk.test+b.vk.test&ip_sans=127.0.0.1+::1&ttl=1h:web-tls,cert:tls",
            "p-",
        )
        .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].kind.clone(), e[0].path.as_str()),
            (Kind::Creds, "database/creds/app")
        );
        assert_eq!(e[0].target, single("p-db"));
        let Kind::Cert(req) = &e[1].kind else {
            panic!("{:?}", e[1])
        };
        assert_eq!(e[1].target, single("p-web-tls"));
        assert_eq!(req.alt_names, ["a.vk.test", "b.vk.test"]);
        assert_eq!(req.ip_sans.len(), 2);
        assert_eq!(
            req.params(),
            serde_json::json!({"common_name": "web.vk.test", "alt_names": "a.vk.test,b.vk.test",
                "ip_sans": "127.0.0.1,::1", "ttl": "1h"})
        );
        assert_eq!(
            e[1].vault_path(),
            "pki/issue/web?common_name=web.vk.test&alt_names=a.vk.test+b.vk.test&ip_sans=127.0.0.1+::1&ttl=1h"
        );
        // `cert:tls` was, and stays, KV path `cert` to Secret `tls`.
        assert_eq!(
            (e[2].kind.clone(), e[2].target.clone()),
            (Kind::Kv, single("p-tls"))
        );
        // The role names the Secret by default.
        let (e, _) = parse_entries("creds:database/creds/app", "").unwrap();
        assert_eq!(e[0].target, single("app"));
        for bad in [
            "cert:pki/issue/web",
            "cert:pki/sign/web?common_name=x",
            "cert:pki/issue/web?common_name=x&key_type=rsa",
            "cert:pki/issue/web?common_name=x&ip_sans=300.1.1.1",
            "creds:database/creds/app?x=1",
            "creds:database/creds/:x",
            "creds:database/creds/app:",
            "cert:pki/issue/web?common_name=x&ip_sans=fe80::1",
        ] {
            let err = parse_entries(bad, "").unwrap_err().to_string();
            assert!(
                err.contains("VAULT_SECRETS") && err.contains(bad),
                "{bad}: {err}"
            );
        }
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

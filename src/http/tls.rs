//! Trust and identity for HTTPS, from [`TlsSettings`]: which CAs verify the
//! server (`VAULT_CACERT`, `VAULT_CACERT_BYTES`, `VAULT_CAPATH`, the system
//! bundle where one exists, else the bundled Mozilla roots so public CAs
//! verify in a `FROM scratch` image), the client certificate for mTLS, and
//! the insecure `VAULT_SKIP_VERIFY` switch.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::config::TlsSettings;
use crate::error::{Error, Result};

/// Where distributions keep their CA bundle; the first that exists is used
/// when no CA is configured.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub fn build(settings: &TlsSettings) -> Result<TlsConfig> {
    let mut builder = TlsConfig::builder();
    if settings.skip_verify {
        builder = builder.disable_verification(true);
    } else {
        builder = builder.root_certs(roots(settings)?);
    }
    if let (Some(cert), Some(key)) = (&settings.client_cert, &settings.client_key) {
        builder = builder.client_cert(Some(client_cert(cert, key)?));
    }
    Ok(builder.build())
}

fn roots(settings: &TlsSettings) -> Result<RootCerts> {
    let mut certs = Vec::new();
    if let Some(file) = &settings.ca_file {
        certs.extend(certs_from_file(file, "VAULT_CACERT")?);
    }
    if let Some(pem) = &settings.ca_pem {
        let found =
            certs_from_pem(pem.as_bytes()).map_err(|e| Error::config("VAULT_CACERT_BYTES", e))?;
        certs.extend(found);
    }
    if let Some(dir) = &settings.ca_dir {
        let read = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("VAULT_CAPATH: read directory {}", dir.display()), e))?;
        let mut paths: Vec<_> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.iter().filter(|p| p.is_file()) {
            certs.extend(certs_from_file(path, "VAULT_CAPATH")?);
        }
    }
    if settings.ca_file.is_some() || settings.ca_pem.is_some() || settings.ca_dir.is_some() {
        if certs.is_empty() {
            return Err(Error::Other(
                "no CA certificate found in VAULT_CACERT / VAULT_CACERT_BYTES / VAULT_CAPATH"
                    .into(),
            ));
        }
        return Ok(RootCerts::Specific(Arc::new(certs)));
    }
    for bundle in SYSTEM_BUNDLES {
        if let Ok(pem) = std::fs::read(bundle) {
            if let Ok(found) = certs_from_pem(&pem) {
                return Ok(RootCerts::Specific(Arc::new(found)));
            }
        }
    }
    Ok(RootCerts::WebPki)
}

/// CA certificates from one PEM file (for the Kubernetes `ca.crt` too).
pub fn certs_from_file(path: &Path, what: &str) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::io(format!("{what}: read {}", path.display()), e))?;
    certs_from_pem(&pem).map_err(|e| Error::Other(format!("{what}: {}: {e}", path.display())))
}

fn certs_from_pem(pem: &[u8]) -> std::result::Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("invalid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

fn client_cert(cert: &Path, key: &Path) -> Result<ClientCert> {
    let chain = certs_from_file(cert, "VAULT_CLIENT_CERT")?;
    let pem = std::fs::read(key)
        .map_err(|e| Error::io(format!("VAULT_CLIENT_KEY: read {}", key.display()), e))?;
    let key = PrivateKey::from_pem(&pem).map_err(|e| {
        Error::Other(format!(
            "VAULT_CLIENT_KEY: {}: invalid private key: {e}",
            key.display()
        ))
    })?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

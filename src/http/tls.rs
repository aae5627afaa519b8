//! Trust and identity for HTTPS, from [`TlsSettings`]: which CAs verify the
//! server (`VAULT_CACERT`, `VAULT_CACERT_BYTES`, `VAULT_CAPATH`, the system
//! bundle where one exists, else the bundled Mozilla roots so public CAs
//! verify in a `FROM scratch` image), the client certificate for mTLS, and
//! the insecure `VAULT_SKIP_VERIFY` switch.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    let ca_file_source = settings.ca_file_source.unwrap_or("VAULT_CACERT");
    if let Some(file) = &settings.ca_file {
        certs.extend(certs_from_file(file, ca_file_source)?);
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
            return Err(Error::Other(match settings.ca_file_source {
                Some(source) => format!("no CA certificate found in {source}"),
                None => {
                    "no CA certificate found in VAULT_CACERT / VAULT_CACERT_BYTES / VAULT_CAPATH"
                        .into()
                }
            }));
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
    let pem = read_pem(path, what)?;
    certs_from_pem(&pem).map_err(|e| Error::Other(format!("{what}: {}: {e}", path.display())))
}

/// Largest PEM file accepted: a distribution's whole CA bundle is about
/// 200 KiB.
const PEM_LIMIT: u64 = 4 * 1024 * 1024;

/// A PEM file (CA, client certificate or key), read as a credential is
/// (see [`crate::fs::read_small`]): a FIFO or a device in its place is an
/// error, not a hang or an allocation without bound. Links are followed:
/// these come from Secret volumes, whose files are links.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    crate::fs::read_small(
        path,
        &format!("{what}:"),
        crate::fs::Links::Follow,
        PEM_LIMIT,
    )
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
    let pem = read_pem(key, "VAULT_CLIENT_KEY")?;
    let key = PrivateKey::from_pem(&pem).map_err(|e| {
        Error::Other(format!(
            "VAULT_CLIENT_KEY: {}: invalid private key: {e}",
            key.display()
        ))
    })?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// Whether the TLS server at `addr` asks for a client certificate (mTLS).
/// Found by a handshake of our own that sends no certificate and no data:
/// the server's CertificateRequest is recorded when it comes. The server's
/// certificate need not be verified for that (nothing is sent over the
/// connection), and the answer only explains a refusal. It exists because
/// a server that refuses a connection without a client certificate closes
/// it right after the handshake, and the client sees only `Broken pipe` or
/// a reset: a message that would be retried and never name the cause.
pub fn asks_for_client_cert(
    addr: std::net::SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let asked = Arc::new(Asked(AtomicBool::new(false)));
    let Ok(config) = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = config
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        .with_client_cert_resolver(asked.clone());
    let Ok(name) = rustls::pki_types::ServerName::try_from(server_name.to_string()) else {
        return false;
    };
    let Ok(mut conn) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    let Ok(mut sock) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    while conn.is_handshaking() && !asked.0.load(Ordering::SeqCst) {
        if conn.complete_io(&mut sock).is_err() {
            break;
        }
    }
    asked.0.load(Ordering::SeqCst)
}

/// Records that the server asked for a client certificate; offers none.
#[derive(Debug)]
struct Asked(std::sync::atomic::AtomicBool);

impl rustls::client::ResolvesClientCert for Asked {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate: only for [`asks_for_client_cert`],
/// whose connection carries nothing.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! How to reach the Kubernetes API server: the pod's service-account
//! directory and the `KUBERNETES_SERVICE_*` variables the kubelet sets.

use std::path::PathBuf;
use std::time::Duration;

use super::{Env, DEFAULT_SA_DIR};
use crate::error::{Error, Result};
use crate::{mapping, url};

/// How to reach the Kubernetes API from inside a pod, or from outside with
/// `KUBERNETES_SERVICEACCOUNT_DIR` pointing at a copy of the pod's directory.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// `https://host:port`.
    pub base_url: String,
    pub token_path: PathBuf,
    pub ca_path: PathBuf,
    pub namespace: String,
    pub timeout: Duration,
}

impl KubeSettings {
    pub fn from_env(env: &Env) -> Result<Self> {
        let host = url::parse_bare_host(&env.required("KUBERNETES_SERVICE_HOST")?)
            .map_err(|e| Error::config("KUBERNETES_SERVICE_HOST", e))?;
        let host = url::url_host(&host);
        let port = env
            .string("KUBERNETES_SERVICE_PORT")
            .unwrap_or_else(|| "443".to_string());
        if !matches!(port.parse::<u16>(), Ok(1..)) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::config(
                "KUBERNETES_SERVICE_PORT",
                format!("invalid port {port:?}, expected 1-65535"),
            ));
        }
        let dir = PathBuf::from(
            env.string("KUBERNETES_SERVICEACCOUNT_DIR")
                .unwrap_or_else(|| DEFAULT_SA_DIR.to_string()),
        );
        let namespace = match env.string("POD_NAMESPACE") {
            Some(ns) => ns,
            None => {
                let file = dir.join("namespace");
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        Error::config(
                            "POD_NAMESPACE",
                            format!("not set, and cannot read {}: {e}", file.display()),
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        if !mapping::is_dns_label(&namespace) {
            return Err(Error::config(
                "POD_NAMESPACE",
                format!("invalid namespace {namespace:?}"),
            ));
        }
        Ok(KubeSettings {
            base_url: format!("https://{host}:{port}"),
            token_path: dir.join("token"),
            ca_path: dir.join("ca.crt"),
            namespace,
            timeout: Duration::from_secs(30),
        })
    }
}

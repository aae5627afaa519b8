//! vault-kubernetes: get Vault (or OpenBao) credentials into Kubernetes pods.
//!
//! Three thin binaries sit on this library:
//! - `vault-kubernetes-authenticator` ([`authenticate`]): log in, write the token file.
//! - `vault-kubernetes-synchronizer` ([`sync`]): copy Vault KV secrets into Kubernetes Secrets,
//!   or into files laid out like a mounted Secret volume ([`files`]).
//! - `vault-kubernetes-token-renewer` ([`renew`]): keep the token alive for the pod's lifetime.
//!
//! Everything is synchronous: each program does a handful of HTTP calls in a
//! row, so threads where parallelism pays (the synchronizer's reads) are
//! simpler and lighter than an async runtime. The environment is read in one
//! place, [`config`]; the HTTP, TLS and retry layer ([`http`], [`tls`]) is
//! shared by the Vault ([`vault`]) and Kubernetes ([`kube`]) clients.
#![forbid(unsafe_code)]

pub mod authenticate;
pub mod base64;
pub mod cli;
pub mod config;
pub mod error;
pub mod files;
pub mod http;
pub mod kube;
pub mod log;
pub mod mapping;
pub mod rate_limit;
pub mod renew;
pub mod signals;
pub mod sync;
pub mod tls;
pub mod token_file;
pub mod unix_socket;
pub mod url;
pub mod vault;

pub use error::{Error, Result};

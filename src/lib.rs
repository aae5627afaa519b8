//! vault-kubernetes: get Vault (or OpenBao) credentials into Kubernetes pods.
//!
//! Thin binaries in `src/bin/` sit on this library, one program each:
//! - `vault-kubernetes-authenticator` ([`authenticate`]): log in, write the token file.
//! - `vault-kubernetes-synchronizer` ([`sync`]): copy Vault KV secrets into Kubernetes
//!   Secrets ([`sync::secrets`]) or into files laid out like a mounted Secret volume
//!   ([`sync::files`]), from one validated plan ([`sync::plan`](mod@sync::plan)).
//! - `vault-kubernetes-token-renewer` ([`renew`]): keep the token alive for the pod's lifetime.
//! - `vault-kubernetes-env` ([`env`]): resolve the `vault:` references of the
//!   environment, then exec the app in its place.
//!
//! # Layout
//!
//! Modules are layered, top first; each imports only from its own layer or
//! those below it, and no import cycles (`python3 scripts/check-modules.py`
//! checks both, and runs in `scripts/test.sh`):
//!
//! 1. entry points: `src/bin/` and [`cli`], what every `main` shares;
//! 2. programs: [`authenticate`], [`renew`], [`sync`], [`env`] (orchestrate, own no mechanism);
//! 3. clients: [`vault`] (login, tokens, KV, leases), [`kube`] (Secrets), [`events`]
//!    (Events on the pod, through [`kube`]), [`token_file`] (the token shared
//!    between containers) and [`watch`] (what wakes a sidecar);
//! 4. transport: [`http`] (requests, retries, deadlines, with [`http::tls`],
//!    [`http::unix_socket`], [`http::rate_limit`]);
//! 5. [`config`]: the only reader of the environment, one file per group of settings;
//! 6. leaves everything may use: [`fs`] (exact-mode, fsynced writes; safe credential
//!    reads), [`signals`], [`mapping`] (`VAULT_SECRETS` and Kubernetes names), [`url`],
//!    [`log`], [`base64`], [`secret`], [`time`], [`random`], [`error`], [`x509`]
//!    (a certificate's validity period), [`termination`] (the final error
//!    line where the kubelet reads it).
//!
//! Everything is synchronous: each program does a handful of HTTP calls in a
//! row, so threads where parallelism pays (the synchronizer's reads) are
//! simpler and lighter than an async runtime. The environment is read in one
//! place, [`config`]; the HTTP, TLS and retry layer ([`http`]) is shared by
//! the Vault ([`vault`]) and Kubernetes ([`kube`]) clients.
#![forbid(unsafe_code)]

// Programs.
pub mod authenticate;
pub mod env;
pub mod renew;
pub mod sync;

// Clients of Vault, of Kubernetes (Secrets, Events), and the token file
// between containers.
pub mod events;
pub mod kube;
pub mod token_file;
pub mod vault;
pub mod watch;

// What every binary's `main` shares.
pub mod cli;

// Transport.
pub mod http;

// Configuration: the only reader of the environment.
pub mod config;

// Leaves.
pub mod base64;
pub mod core_dump;
pub mod dir;
pub mod error;
pub mod fs;
pub mod log;
pub mod mapping;
pub mod parallel;
pub mod random;
pub mod secret;
pub mod signals;
pub mod termination;
pub mod time;
pub mod url;
pub mod x509;

pub use error::{Error, Result};

#[cfg(test)]
mod tests {
    /// The layering `scripts/check-modules.py` checks (see the guide above),
    /// here too so `cargo test --lib` catches a new module in no layer or an
    /// upward import before it lands, not only `scripts/test.sh`.
    #[test]
    fn modules_are_layered_without_cycles() {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = std::process::Command::new("python3")
            .arg(format!("{root}/scripts/check-modules.py"))
            .arg(format!("{root}/src"))
            .output()
            .expect("python3 runs scripts/check-modules.py");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

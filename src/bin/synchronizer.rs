//! vault-kubernetes-synchronizer: copy Vault secrets into Kubernetes Secrets or files ([`vault_kubernetes::sync`]).

use std::process::ExitCode;
use vault_kubernetes::cli::{self, Program};
use vault_kubernetes::config::SynchronizerConfig;

fn main() -> ExitCode {
    cli::main(
        Program::Synchronizer,
        SynchronizerConfig::from_env,
        vault_kubernetes::sync::run,
    )
}

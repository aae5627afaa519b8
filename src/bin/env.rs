//! vault-kubernetes-env: resolve the `vault:` references, exec the app ([`vault_kubernetes::env`]).

use std::process::ExitCode;
use vault_kubernetes::cli::{self, Program};
use vault_kubernetes::config::EnvConfig;

fn main() -> ExitCode {
    cli::main_with_args(
        Program::Env,
        EnvConfig::from_env_and_args,
        vault_kubernetes::env::run,
    )
}

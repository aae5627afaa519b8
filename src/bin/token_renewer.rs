//! vault-kubernetes-token-renewer: keep the token alive for the pod's lifetime ([`vault_kubernetes::renew`]).

use std::process::ExitCode;
use vault_kubernetes::cli::{self, Program};
use vault_kubernetes::config::RenewerConfig;

fn main() -> ExitCode {
    cli::main(
        Program::TokenRenewer,
        RenewerConfig::from_env,
        vault_kubernetes::renew::run,
    )
}

//! vault-kubernetes-authenticator: log in, write the token file, exit ([`vault_kubernetes::authenticate`]).

use std::process::ExitCode;
use vault_kubernetes::cli::{self, Program};
use vault_kubernetes::config::AuthenticatorConfig;

fn main() -> ExitCode {
    cli::main(
        Program::Authenticator,
        AuthenticatorConfig::from_env,
        vault_kubernetes::authenticate::run,
    )
}

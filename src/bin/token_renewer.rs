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

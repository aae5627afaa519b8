//! vault-kubernetes-authenticator: log in once, leave the token in
//! `VAULT_TOKEN_PATH` for the pod's other containers.

use crate::config::AuthenticatorConfig;
use crate::error::{Error, Result};
use crate::log;
use crate::signals::Shutdown;
use crate::token_file;
use crate::vault::VaultClient;

/// Logs in (retrying until `LOGIN_TIMEOUT`) and writes the token file.
/// With `ALLOW_FAIL`, a failed login removes any stale token file and
/// still returns `Ok`, so the pod goes on without a token.
///
/// The token's directory is checked first (exists, is one, writable), so a
/// token is never issued only to be lost. SIGTERM/SIGINT end it at once,
/// even mid-request (as PID 1 of a container the default action would
/// ignore them): no login starts and nothing is written or removed after.
pub fn run(cfg: &AuthenticatorConfig) -> Result<()> {
    let _shutdown = Shutdown::install()?;
    token_file::check_writable(&cfg.token_file)?;
    let client = VaultClient::new(&cfg.vault)?;
    let auth = match client.login(&cfg.login) {
        Ok(auth) => auth,
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(err) if cfg.allow_fail => {
            log::warn_verbatim(format!(
                "authentication failed - ALLOW_FAIL is set therefore pod will continue: {err}"
            ));
            // A token from an earlier run would look valid to the next
            // container; "no token" is the truthful state.
            if token_file::remove(&cfg.token_file.path)? {
                log::info(format!(
                    "removed stale token file {}",
                    cfg.token_file.path.display()
                ));
            }
            return Ok(());
        }
        Err(err) => return Err(Error::Other(format!("authentication failed: {err}"))),
    };
    log::info("successfully authenticated to vault");
    token_file::write(&cfg.token_file, &auth.client_token)?;
    log::info(format!(
        "successfully stored vault token at {}",
        cfg.token_file.path.display()
    ));
    // The process ends now: closing the connection and freeing the
    // client's buffers one by one is work the kernel does at exit anyway.
    std::mem::forget(client);
    Ok(())
}

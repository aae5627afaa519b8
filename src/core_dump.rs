//! No core dumps: a core of any of our programs would hold the token, the
//! service-account JWT, a secret id and secret values, and lie on the node
//! for anyone who can read it (one of a renewer held its token 6 times).
//!
//! Two guards, since each alone has a gap: `PR_SET_DUMPABLE` 0 (the kernel
//! writes no core, to a file or a `core_pattern` pipe, and other processes
//! of the same uid cannot ptrace us or read our memory through /proc) and a
//! soft core size limit of 0 (for kernels with `fs.suid_dumpable=2`, which
//! dump non-dumpable processes to files). Both are the process's own
//! settings: no privilege is needed.

use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft core size limit found at start, for [`restore_for_exec`].
static SOFT: OnceLock<u64> = OnceLock::new();

/// Applies both guards; what fails is returned as warnings (it does not
/// stop the program), for the caller to log.
pub fn prevent() -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        warnings.push(format!("prctl(PR_SET_DUMPABLE, 0): {e}"));
    }
    match getrlimit(Resource::RLIMIT_CORE) {
        Ok((soft, hard)) => {
            let _ = SOFT.set(soft);
            // The soft limit only: the hard one stays, for the app that
            // vault-kubernetes-env becomes.
            if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, hard) {
                warnings.push(format!("setrlimit(RLIMIT_CORE, 0): {e}"));
            }
        }
        Err(e) => warnings.push(format!("getrlimit(RLIMIT_CORE): {e}")),
    }
    warnings
}

/// Gives back the core size limit found at start, right before `execve`
/// of another program (vault-kubernetes-env's app): its cores are its own
/// business. `PR_SET_DUMPABLE` is reset by `execve` itself, and stays 0
/// until then.
pub fn restore_for_exec() {
    if let Some(&soft) = SOFT.get() {
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CORE) {
            let _ = setrlimit(Resource::RLIMIT_CORE, soft.min(hard), hard);
        }
    }
}

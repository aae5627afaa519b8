//! Synchronizer.
use crate::config::SynchronizerConfig;
pub fn run(_c: &SynchronizerConfig) -> crate::Result<()> {
    Err(crate::Error::Other("not yet implemented".into()))
}

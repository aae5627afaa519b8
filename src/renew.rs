//! Renewer.
use crate::config::RenewerConfig;
pub fn run(_c: &RenewerConfig) -> crate::Result<()> {
    Err(crate::Error::Other("not yet implemented".into()))
}

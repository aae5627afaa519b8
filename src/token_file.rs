//! The token file shared between containers (`VAULT_TOKEN_PATH`): written
//! atomically (temporary file in the same directory, fsync, rename, fsync
//! of the directory, with [`crate::fs`]) so a reader sees the old token or
//! the new one, never an empty or partial file; mode 0640 unless
//! configured; no trailing newline; only a valid token is ever written.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::TokenFileSettings;
use crate::error::{Error, Result};
use crate::fs::{create_file, read_credential, sync_dir, Links};
use crate::secret::Secret;

/// The directory holding the token file (`.` for a bare file name): where
/// temporary files go and what the renewer watches.
pub fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Checks, before any login, every local precondition of writing the
/// token: the directory exists and is a directory, the path is not a
/// directory, and a file can really be created there with the configured
/// owner and mode (a temporary one, removed at once: permissions, read-only
/// mounts, full disks, ACLs and a `VAULT_TOKEN_FILE_OWNER` this process may
/// not give all show). Each error names the variable and the path, so no
/// Vault token is minted only to be lost, on every restart.
pub fn check_writable(settings: &TokenFileSettings) -> Result<()> {
    let path = &settings.path;
    let dir = directory(path);
    let var = |reason: String| Error::config("VAULT_TOKEN_PATH", reason);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(var(format!(
                "{} is not a directory (the directory of {})",
                dir.display(),
                path.display()
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(var(format!(
                "token directory {} does not exist ({}); mount a volume there",
                dir.display(),
                path.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("token directory {}", dir.display()), e)),
    }
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(var(format!("{} is a directory", path.display())));
    }
    let tmp = temp_path(path)?;
    let probe = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| {
            Error::io(
                format!(
                    "token directory {} is not writable (tried {})",
                    dir.display(),
                    tmp.display()
                ),
                e,
            )
        })?;
    let owned = match (settings.uid, settings.gid) {
        (None, None) => Ok(()),
        (uid, gid) => std::os::unix::fs::fchown(&probe, uid, gid).map_err(|e| {
            Error::config(
                "VAULT_TOKEN_FILE_OWNER",
                format!(
                    "cannot give a file in {} the owner {}:{} ({e}); run as root or drop the variable",
                    dir.display(),
                    settings.uid.map_or(String::new(), |u| u.to_string()),
                    settings.gid.map_or(String::new(), |g| g.to_string()),
                ),
            )
        }),
    };
    let moded = owned.and_then(|()| {
        probe
            .set_permissions(fs::Permissions::from_mode(settings.mode))
            .map_err(|e| {
                Error::config(
                    "VAULT_TOKEN_FILE_MODE",
                    format!(
                        "cannot give a file in {} the mode {:o}: {e}",
                        dir.display(),
                        settings.mode
                    ),
                )
            })
    });
    drop(probe);
    let removed =
        fs::remove_file(&tmp).map_err(|e| Error::io(format!("remove {}", tmp.display()), e));
    moded.and(removed)
}

/// A fresh temporary file name next to `path`.
fn temp_path(path: &Path) -> Result<std::path::PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        Error::config(
            "VAULT_TOKEN_PATH",
            format!("{} is not a file path", path.display()),
        )
    })?;
    Ok(directory(path).join(format!(
        ".{}.{}.{:x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        (crate::random::random_unit() * 1e12) as u64
    )))
}

/// Writes `token` atomically. Refused once SIGTERM/SIGINT has arrived
/// (nothing new starts after a signal) and for a token that fails
/// [`crate::vault::token::check_token`]: the good token on disk stays.
pub fn write(settings: &TokenFileSettings, token: &Secret) -> Result<()> {
    let path = &settings.path;
    let dir = directory(path);
    if crate::signals::received() {
        return Err(Error::Interrupted);
    }
    crate::vault::token::check_token(token.expose()).map_err(|reason| Error::Invalid {
        context: format!("token for {}", path.display()),
        reason,
    })?;
    if !dir.is_dir() {
        return Err(Error::Other(format!(
            "token directory {} does not exist (VAULT_TOKEN_PATH={}); mount a volume there",
            dir.display(),
            path.display()
        )));
    }
    let tmp = temp_path(path)?;
    let result = write_tmp(&tmp, settings, token).and_then(|()| {
        fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename {} to {}", tmp.display(), path.display()), e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

fn write_tmp(tmp: &Path, settings: &TokenFileSettings, token: &Secret) -> Result<()> {
    let (mode, uid, gid) = (settings.mode, settings.uid, settings.gid);
    create_file(tmp, mode, uid, gid, token.expose().as_bytes())
}

/// The token in the file, as [`read_credential`]; `None` when the file is
/// missing or empty.
pub fn read(path: &Path) -> Result<Option<Secret>> {
    match read_credential(path, "token file", Links::Refuse) {
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        other => other,
    }
}

/// Removes the file; `Ok(false)` if there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(
            format!("remove token file {}", path.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn settings(dir: &Path, mode: u32) -> TokenFileSettings {
        TokenFileSettings {
            path: dir.join("token"),
            mode,
            uid: None,
            gid: None,
        }
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vk-tf-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_0600_without_newline_and_leaves_no_temp() {
        let d = tempdir("w");
        let s = settings(&d, 0o600);
        write(&s, &Secret::new("s.abc")).unwrap();
        write(&s, &Secret::new("s.def")).unwrap();
        assert_eq!(fs::read_to_string(&s.path).unwrap(), "s.def");
        assert_eq!(fs::metadata(&s.path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        let s = settings(&d, 0o640);
        write(&s, &Secret::new("x")).unwrap();
        assert_eq!(fs::metadata(&s.path).unwrap().mode() & 0o777, 0o640);
        assert_eq!(read(&s.path).unwrap().unwrap().expose(), "x");
        assert!(remove(&s.path).unwrap());
        assert!(!remove(&s.path).unwrap());
        assert!(read(&s.path).unwrap().is_none());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_tokens_are_never_written() {
        let d = tempdir("bad");
        let s = settings(&d, 0o600);
        write(&s, &Secret::new("s.good")).unwrap();
        for bad in ["", "s.a\nb", "s.a b"] {
            let err = write(&s, &Secret::new(bad)).unwrap_err().to_string();
            assert!(err.contains("invalid answer"), "{err}");
        }
        assert_eq!(fs::read_to_string(&s.path).unwrap(), "s.good");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unwritable_places_are_found_before_login() {
        let d = tempdir("pre");
        let at = |p: &Path| TokenFileSettings {
            path: p.to_path_buf(),
            mode: 0o640,
            uid: None,
            gid: None,
        };
        let err = |p: &Path| check_writable(&at(p)).unwrap_err().to_string();
        check_writable(&at(&d.join("token"))).unwrap();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "probe removed");
        let missing = d.join("missing/token");
        assert!(err(&missing).contains(&format!("{} does not exist", d.join("missing").display())));
        fs::write(d.join("file"), "").unwrap();
        let under_file = d.join("file/token");
        assert!(err(&under_file).contains("is not a directory"));
        fs::create_dir(d.join("token")).unwrap();
        assert!(err(&d.join("token"))
            .contains(&format!("{} is a directory", d.join("token").display())));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let s = settings(Path::new("/nonexistent-vk-dir"), 0o600);
        let err = write(&s, &Secret::new("x")).unwrap_err().to_string();
        assert!(
            err.contains("token directory /nonexistent-vk-dir does not exist"),
            "{err}"
        );
    }
}

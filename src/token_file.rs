//! The token file shared between containers: written atomically (temporary
//! file in the same directory, fsync, rename, fsync of the directory) so a
//! reader sees the old token or the new one, never an empty or partial
//! file; mode 0640 unless configured; no trailing newline.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::{Secret, TokenFileSettings};
use crate::error::{Error, Result};

/// The directory holding the token file (`.` for a bare file name): where
/// temporary files go and what the renewer watches.
pub fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Checks, before any login, that the token could be written: the
/// directory exists and is a directory, the path is not a directory, and a
/// file can really be created there (a temporary one, removed at once:
/// permissions, read-only mounts, full disks and ACLs all show). Each
/// error names the path, so no Vault token is issued only to be lost.
pub fn check_writable(path: &Path) -> Result<()> {
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
    OpenOptions::new()
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
    fs::remove_file(&tmp).map_err(|e| Error::io(format!("remove {}", tmp.display()), e))
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
        (crate::http::random_unit() * 1e12) as u64
    )))
}

/// Writes `token` atomically. Refused once SIGTERM/SIGINT has arrived
/// (nothing new starts after a signal) and for a token that fails
/// [`crate::vault::check_token`]: the good token on disk stays.
pub fn write(settings: &TokenFileSettings, token: &Secret) -> Result<()> {
    let path = &settings.path;
    let dir = directory(path);
    if crate::signals::received() {
        return Err(Error::Interrupted);
    }
    crate::vault::check_token(token.expose()).map_err(|reason| Error::Invalid {
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

/// Creates `path` (it must not exist) with exactly `mode` (the umask must
/// not decide who can read a token or secret) and owner `uid`/`gid` when
/// given, writes `bytes` and fsyncs it. Also the file target's writer.
pub(crate) fn create_file(
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    bytes: &[u8],
) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(ctx("create"), e))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid, gid)
            .map_err(|e| Error::io(ctx("change owner of"), e))?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(ctx("set mode of"), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(ctx("write"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("sync"), e))
}

/// A rename or a new entry is durable only once its directory is on disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync directory {}", dir.display()), e))
}

/// The token in the file, as [`read_credential`]; `None` when the file is
/// missing or empty.
pub fn read(path: &Path) -> Result<Option<Secret>> {
    match read_credential(path, "token file") {
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        other => other,
    }
}

/// UTF-8 byte-order mark, written by some editors and Windows tools.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A credential file (Vault token, service-account JWT): a leading UTF-8
/// byte-order mark is dropped and surrounding whitespace trimmed; any other
/// byte that cannot be part of a token (anything but printable ASCII) is
/// refused with its position in the file, never the content, so a stray
/// byte is reported as such instead of as Vault's "permission denied".
/// `what` names the file in messages. `None` when the file is empty.
pub fn read_credential(path: &Path, what: &str) -> Result<Option<Secret>> {
    let bytes =
        fs::read(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), e))?;
    parse_credential(&bytes)
        .map(|t| t.map(Secret::new))
        .map_err(|why| Error::Other(format!("{what} {}: {why}", path.display())))
}

fn parse_credential(bytes: &[u8]) -> std::result::Result<Option<String>, String> {
    let skip = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    let body = &bytes[skip..];
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Ok(None);
    };
    let end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    let token = &body[start..end];
    if let Some(i) = token.iter().position(|b| !b.is_ascii_graphic()) {
        let kind = match token[i] {
            b' ' | b'\t' | b'\r' | b'\n' => "whitespace inside the token",
            b if b.is_ascii() => "a control character",
            _ => "a non-ASCII byte",
        };
        return Err(format!(
            "byte {} is {kind}, which no token contains (content not shown)",
            skip + start + i + 1
        ));
    }
    Ok(Some(String::from_utf8_lossy(token).into_owned()))
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
        let err = |p: &Path| check_writable(p).unwrap_err().to_string();
        check_writable(&d.join("token")).unwrap();
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
    fn credential_files_drop_a_bom_and_refuse_odd_bytes() {
        assert_eq!(
            parse_credential(b"\xEF\xBB\xBFs.abc\n").unwrap().unwrap(),
            "s.abc"
        );
        assert_eq!(parse_credential(b" \r\n").unwrap(), None);
        assert_eq!(parse_credential(b"\xEF\xBB\xBF").unwrap(), None);
        for (bytes, pos) in [
            (&b"\xEF\xBB\xBFab\x00c"[..], "byte 6 "),
            (b"ab cd", "byte 3 "),
            (b"\xFF\xFEa\x00", "byte 1 "),
            (b"  tok\xC3\xA9", "byte 6 "),
        ] {
            let err = parse_credential(bytes).unwrap_err();
            assert!(err.starts_with(pos), "{err}");
        }
        let d = tempdir("bom");
        let p = d.join("jwt");
        fs::write(&p, b"secret-part\x07more").unwrap();
        let err = read_credential(&p, "service account token")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service account token") && err.contains("byte 12 is a control"),
            "{err}"
        );
        assert!(!err.contains("secret-part"), "{err}");
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

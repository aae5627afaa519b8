//! Files written and read safely, for everything that touches the pod's
//! volumes: files created with exactly their mode and owner and fsynced,
//! directories fsynced after a rename, and credential files (tokens, JWTs)
//! read without ever showing their content in an error.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Creates `path` (it must not exist) with exactly `mode` (the umask must
/// not decide who can read a token or secret) and owner `uid`/`gid` when
/// given, writes `bytes` and fsyncs it. The token file and the
/// synchronizer's file target both write with it.
pub fn create_file(
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
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync directory {}", dir.display()), e))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = std::env::temp_dir().join(format!("vk-fs-bom-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
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
}

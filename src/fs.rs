//! Files written and read safely, for everything that touches the pod's
//! volumes: files created with exactly their mode and owner and fsynced,
//! directories fsynced after a rename, and credential files (tokens, JWTs)
//! read without ever showing their content in an error, and a binary
//! installed by an atomic copy.

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

/// Largest credential file accepted, in bytes. A projected
/// service-account JWT is 1–2 KiB (a few with many audiences), a Vault
/// token at most 4 KiB; 64 KiB is far above both and bounds what a file
/// that another container controls can make us allocate.
pub const CREDENTIAL_LIMIT: u64 = 64 * 1024;

/// Whether the last component of a path may be a symbolic link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Links {
    /// Followed: the kubelet's projected volumes make every file a link
    /// into `..data/` (the service-account token is one).
    Follow,
    /// Refused, but for the one link the kubelet makes in a Secret or
    /// projected volume, `<name> -> ..data/<name>`: the token file our
    /// programs write is never a link, so another one there was put by
    /// someone else and could point anywhere; a token mounted from a
    /// Secret volume is still read.
    Refuse,
}

/// Reads a small file that another container sharing the volume may
/// control, the way such a file must be read: opened without blocking
/// (`O_NONBLOCK`: a FIFO opens at once, with or without a writer), not
/// inherited by children (`O_CLOEXEC`), without following a link when
/// `links` says so (`O_NOFOLLOW`), then checked on the open descriptor, so
/// nothing can be swapped between check and use: a regular file of at most
/// `limit` bytes, read up to `limit + 1` (a file growing meanwhile). A
/// FIFO, a device such as `/dev/zero`, a socket or a directory is an error
/// naming what it is; a missing file stays an [`Error::Io`] of kind
/// `NotFound`. `what` names the file in messages.
pub fn read_small(path: &Path, what: &str, links: Links, limit: u64) -> Result<Vec<u8>> {
    use nix::libc::{ELOOP, O_NOFOLLOW, O_NONBLOCK};
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let shown = || format!("{what} {}", path.display());
    let flags = match links {
        Links::Follow => O_NONBLOCK,
        Links::Refuse => O_NONBLOCK | O_NOFOLLOW,
    };
    let open = |flags| OpenOptions::new().read(true).custom_flags(flags).open(path);
    let file = match open(flags) {
        Err(e) if e.raw_os_error() == Some(ELOOP) && kubelet_link(path) => open(O_NONBLOCK),
        other => other,
    }
    .map_err(|e| match e.raw_os_error() {
        Some(ELOOP) if links == Links::Refuse => Error::Other(format!(
            "{} is a symbolic link, which is not followed (it could lead anywhere)",
            shown()
        )),
        _ => Error::io(format!("read {}", shown()), e),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("inspect {}", shown()), e))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let is = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "of an unknown kind"
        };
        return Err(Error::Other(format!(
            "{} is not a regular file but {is}",
            shown()
        )));
    }
    let too_big = |size: u64| {
        Error::Other(format!(
            "{} is {size} bytes or more, over the limit of {limit} bytes",
            shown()
        ))
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {}", shown()), e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Whether `path` is the kubelet's link `<name> -> ..data/<name>`.
fn kubelet_link(path: &Path) -> bool {
    let (Ok(target), Some(name)) = (fs::read_link(path), path.file_name()) else {
        return false;
    };
    target == Path::new("..data").join(name)
}

/// A credential file (Vault token, service-account JWT), read with
/// [`read_small`] up to [`CREDENTIAL_LIMIT`]: a leading UTF-8
/// byte-order mark is dropped and surrounding whitespace trimmed; any other
/// byte that cannot be part of a token (anything but printable ASCII) is
/// refused with its position in the file, never the content, so a stray
/// byte is reported as such instead of as Vault's "permission denied".
/// `what` names the file in messages. `None` when the file is empty.
pub fn read_credential(path: &Path, what: &str, links: Links) -> Result<Option<Secret>> {
    let bytes = read_small(path, what, links, CREDENTIAL_LIMIT)?;
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

/// Copies `src` to `dst` atomically: a temporary file in `dst`'s directory
/// created with exactly `mode`, written, fsynced, renamed over `dst`, then
/// the directory fsynced. A reader (or an `execve`) sees the old file or
/// the complete new one, never a part. Used by `vault-kubernetes-env
/// --install`, which copies the running binary (`/proc/self/exe`).
pub fn copy_atomic(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    let dir = match dst.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dst
        .file_name()
        .ok_or_else(|| Error::Other(format!("{} is not a file path", dst.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.{:x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        (crate::random::random_unit() * 1e12) as u64
    ));
    let mut from = File::open(src).map_err(|e| Error::io(format!("open {}", src.display()), e))?;
    let copied = (|| {
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(ctx("create"), e))?;
        to.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(ctx("set mode of"), e))?;
        std::io::copy(&mut from, &mut to).map_err(|e| Error::io(ctx("write"), e))?;
        to.sync_all().map_err(|e| Error::io(ctx("sync"), e))?;
        drop(to);
        fs::rename(&tmp, dst)
            .map_err(|e| Error::io(format!("rename {} to {}", tmp.display(), dst.display()), e))
    })();
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
        return copied;
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_as_a_hostile_neighbour_leaves_them() {
        let d = std::env::temp_dir().join(format!("vk-fs-small-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("..2026_01_01_00_00_00.1")).unwrap();
        fs::write(d.join("..2026_01_01_00_00_00.1/token"), "s.kubelet").unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", d.join("..data")).unwrap();
        // The kubelet's layout of a Secret volume: read.
        std::os::unix::fs::symlink("..data/token", d.join("token")).unwrap();
        let read = |name: &str, links| read_credential(&d.join(name), "token file", links);
        assert_eq!(
            read("token", Links::Refuse).unwrap().unwrap().expose(),
            "s.kubelet"
        );
        // Any other link: refused, or followed where asked.
        std::os::unix::fs::symlink(d.join("..data/token"), d.join("elsewhere")).unwrap();
        let err = read("elsewhere", Links::Refuse).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(read("elsewhere", Links::Follow).is_ok());
        // Not regular files: named, never blocked on, never read.
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("zero")).unwrap();
        let err = read("fifo", Links::Follow).unwrap_err().to_string();
        assert!(err.contains("not a regular file but a FIFO"), "{err}");
        let err = read("zero", Links::Follow).unwrap_err().to_string();
        assert!(
            err.contains("not a regular file but a character device"),
            "{err}"
        );
        fs::write(d.join("big"), vec![b'a'; CREDENTIAL_LIMIT as usize + 1]).unwrap();
        let err = read("big", Links::Follow).unwrap_err().to_string();
        assert!(err.contains("over the limit of 65536 bytes"), "{err}");
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
        let d = std::env::temp_dir().join(format!("vk-fs-bom-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join("jwt");
        fs::write(&p, b"secret-part\x07more").unwrap();
        let err = read_credential(&p, "service account token", Links::Follow)
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

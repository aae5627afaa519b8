//! A directory held open by its descriptor, and the operations made
//! relative to it (`openat`, `mkdirat`, `renameat`, `unlinkat`,
//! `symlinkat`, `readlinkat`, `fstatat`), none of which follows a link in
//! the name it is given. A path is resolved once, when the directory is
//! opened; after that, another container sharing the volume cannot send a
//! write or a delete elsewhere by swapping a directory for a link between a
//! check and its use. The synchronizer's file target works this way.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::{Error, Result};

/// An open directory; `path` is only for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a name in a directory is, itself (a link is a link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// `fstatat` of a name without following it.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, with set-user-ID, set-group-ID and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

fn io(what: &str, path: &Path, e: Errno) -> Error {
    Error::io(
        format!("{what} {}", path.display()),
        std::io::Error::from(e),
    )
}

/// Whether `e` is an I/O error of this errno.
pub fn is(e: &Error, errno: Errno) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(errno as i32))
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens the directory at `path`, following links in it: it is a
    /// configured mount point, resolved once here.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty())
            .map_err(|e| io("open directory", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in this directory, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The directory `name` in this one, never through a link: a link
    /// there is an error ("not a directory"), whatever it points to.
    pub fn open_dir(&self, name: &str) -> Result<Dir> {
        let fd = openat(
            self.fd.as_fd(),
            name,
            DIR_FLAGS | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => io("open directory", &self.join(name), Errno::ENOTDIR),
            e => io("open directory", &self.join(name), e),
        })?;
        Ok(Dir {
            fd,
            path: self.join(name),
        })
    }

    /// What `name` is, itself; `None` if there is no such name.
    pub fn stat(&self, name: &str) -> Result<Option<Entry>> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(entry(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io("inspect", &self.join(name), e)),
        }
    }

    /// This directory itself.
    pub fn stat_self(&self) -> Result<Entry> {
        fstat(self.fd.as_fd())
            .map(|st| entry(&st))
            .map_err(|e| io("inspect", &self.path, e))
    }

    /// Which directory this is: its device and inode numbers.
    pub fn identity(&self) -> Result<(u64, u64)> {
        fstat(self.fd.as_fd())
            .map(|st| (st.st_dev, st.st_ino))
            .map_err(|e| io("inspect", &self.path, e))
    }

    /// This directory's descriptor again, as a file (for `flock`).
    pub fn file(&self) -> Result<std::fs::File> {
        self.fd
            .try_clone()
            .map(std::fs::File::from)
            .map_err(|e| Error::io(format!("open directory {}", self.path.display()), e))
    }

    /// Sets this directory's mode (through its descriptor).
    pub fn chmod_self(&self, mode: u32) -> Result<()> {
        fchmod(self.fd.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| io("set mode of", &self.path, e))
    }

    /// Creates the directory `name` (mode 0700 until the caller sets it).
    pub fn mkdir(&self, name: &str) -> Result<()> {
        mkdirat(self.fd.as_fd(), name, Mode::S_IRWXU)
            .map_err(|e| io("create directory", &self.join(name), e))
    }

    /// Creates the file `name` (it must not exist, and a link there is
    /// not followed) with exactly `mode` and owner `uid`/`gid` when given,
    /// writes `bytes` and fsyncs it.
    pub fn create_file(
        &self,
        name: &str,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        bytes: &[u8],
    ) -> Result<()> {
        let path = self.join(name);
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| io("create", &path, e))?;
        if uid.is_some() || gid.is_some() {
            fchown(fd.as_fd(), uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                .map_err(|e| io("change owner of", &path, e))?;
        }
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| io("set mode of", &path, e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("sync {}", path.display()), e))
    }

    /// The content of the regular file `name`, at most `limit` bytes;
    /// opened without following a link and without blocking on a FIFO.
    pub fn read_file(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.join(name);
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("read", &path, e))?;
        let st = fstat(fd.as_fd()).map_err(|e| io("inspect", &path, e))?;
        if entry(&st).kind != Kind::File {
            return Err(Error::Other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::Other(format!(
                "{} is over the limit of {limit} bytes",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Where the link `name` points; `None` if there is no such name or
    /// it is not a link.
    pub fn read_link(&self, name: &str) -> Result<Option<PathBuf>> {
        match readlinkat(self.fd.as_fd(), name) {
            Ok(target) => Ok(Some(PathBuf::from(target))),
            Err(Errno::ENOENT | Errno::EINVAL) => Ok(None),
            Err(e) => Err(io("read link", &self.join(name), e)),
        }
    }

    /// Creates the link `name -> target`.
    pub fn symlink(&self, target: &Path, name: &str) -> Result<()> {
        symlinkat(target, self.fd.as_fd(), name).map_err(|e| io("create link", &self.join(name), e))
    }

    /// Renames `from` to `to`, both in this directory (atomically replacing `to`).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to)
            .map_err(|e| io("rename", &self.join(from), e))
    }

    /// Removes the file or link `name`.
    pub fn unlink(&self, name: &str) -> Result<()> {
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io("remove", &self.join(name), e))
    }

    /// Removes the empty directory `name`.
    pub fn rmdir(&self, name: &str) -> Result<()> {
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir)
            .map_err(|e| io("remove", &self.join(name), e))
    }

    /// Removes the directory `name` and everything in it, descending only
    /// into directories (a link is removed, never followed).
    pub fn remove_tree(&self, name: &str) -> Result<()> {
        let sub = self.open_dir(name)?;
        for entry in sub.names()? {
            match sub.stat(&entry)? {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => sub.remove_tree(&entry)?,
                Some(_) => sub.unlink(&entry)?,
                None => {}
            }
        }
        self.rmdir(name)
    }

    /// The names in this directory, without `.` and `..`; names that are
    /// not UTF-8 are left out (the file target creates none).
    pub fn names(&self) -> Result<Vec<String>> {
        let dup = self
            .fd
            .try_clone()
            .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
        let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| io("read", &self.path, e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io("read", &self.path, e))?;
            let name = OsString::from(std::ffi::OsStr::from_bytes(entry.file_name().to_bytes()));
            match name.to_str() {
                Some("." | "..") | None => {}
                Some(n) => names.push(n.to_string()),
            }
        }
        Ok(names)
    }

    /// fsync of the directory: its new and renamed entries are on disk.
    pub fn sync(&self) -> Result<()> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(|e| io("sync directory", &self.path, e))
    }
}

fn entry(st: &nix::sys::stat::FileStat) -> Entry {
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let kind = if fmt == SFlag::S_IFREG {
        Kind::File
    } else if fmt == SFlag::S_IFDIR {
        Kind::Dir
    } else if fmt == SFlag::S_IFLNK {
        Kind::Link
    } else {
        Kind::Other
    };
    Entry {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_followed_through_a_link() {
        let base = std::env::temp_dir().join(format!("vk-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/real")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("root/link")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere/f"), base.join("root/flink")).unwrap();
        let root = Dir::open(&base.join("root")).unwrap();
        assert_eq!(root.stat("link").unwrap().unwrap().kind, Kind::Link);
        assert!(root
            .open_dir("link")
            .unwrap_err()
            .to_string()
            .contains("Not a directory"));
        assert!(root.create_file("flink", 0o600, None, None, b"x").is_err());
        assert!(
            !base.join("elsewhere/f").exists(),
            "no write through the link"
        );
        assert!(root.read_file("flink", 10).is_err());
        let real = root.open_dir("real").unwrap();
        real.create_file("f", 0o640, None, None, b"hello").unwrap();
        assert_eq!(real.stat("f").unwrap().unwrap().mode, 0o640);
        assert_eq!(real.read_file("f", 5).unwrap(), b"hello");
        assert!(real.read_file("f", 4).is_err(), "over the limit");
        real.mkdir("sub").unwrap();
        real.open_dir("sub")
            .unwrap()
            .symlink(Path::new("/etc"), "l")
            .unwrap();
        assert_eq!(real.names().unwrap().len(), 2);
        root.remove_tree("real").unwrap();
        assert!(
            std::fs::metadata("/etc/passwd").is_ok(),
            "link not followed"
        );
        assert!(root.stat("real").unwrap().is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }
}

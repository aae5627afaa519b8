//! What wakes a sidecar: its next timer, a signal, or a change of the token
//! file (another container wrote a new token). One thread sleeps in `poll`
//! on inotify (the token's directory, so another writer's atomic rename is
//! seen) and the signal pipe, with the time to the next action as timeout:
//! no wake-up between events. Without inotify (instances or watches used
//! up by other processes of the same uid) the file's metadata is checked
//! every [`POLL_INTERVAL`]. Used by the renewer and the synchronizer's
//! leased entries.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

use crate::error::{Error, Result};
use crate::signals::{poll_timeout, Shutdown};
use crate::{log, token_file};

/// Why [`wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Timer,
    Signal,
    FileChanged,
}

/// How often the token file's metadata is checked when inotify is not
/// available: a handed-over token is seen within 5 s, at 12 wake-ups a minute.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What tells a program the token file changed.
pub enum Watch {
    /// inotify on the token file's directory, filtered on the file's name.
    Inotify { inotify: Inotify, name: OsString },
    /// No inotify to be had: the file's metadata, checked every
    /// [`POLL_INTERVAL`].
    Poll {
        path: PathBuf,
        seen: Option<Stamp>,
        next: Instant,
    },
}

/// What changes when a file is written or replaced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    // The entry itself: a link swapped in is a change, whatever it points to.
    std::fs::symlink_metadata(path).ok().map(|m| Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

impl Watch {
    pub fn new(path: &Path) -> Result<Self> {
        let dir = token_file::directory(path);
        let inotify = match Inotify::init() {
            Ok(i) => i,
            // EMFILE: the uid's inotify instances are used up (128 by
            // default, shared by every container of that uid on the node).
            Err(e) => return Ok(Watch::polling(path, &format!("inotify init: {e}"))),
        };
        let added = inotify.watches().add(
            dir,
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM,
        );
        match added {
            Ok(_) => Ok(Watch::Inotify {
                inotify,
                name: path.file_name().unwrap_or_default().to_os_string(),
            }),
            // ENOSPC: the uid's inotify watches are used up.
            Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::ENOSPC as i32 || c == Errno::ENOMEM as i32) => {
                Ok(Watch::polling(
                    path,
                    &format!("watch directory {}: {e}", dir.display()),
                ))
            }
            Err(e) => Err(Error::io(format!("watch directory {}", dir.display()), e)),
        }
    }

    fn polling(path: &Path, why: &str) -> Watch {
        log::warn(format!(
            "inotify is not available ({why}): checking {} every {}s instead",
            path.display(),
            POLL_INTERVAL.as_secs()
        ));
        Watch::Poll {
            path: path.to_path_buf(),
            seen: stamp(path),
            next: Instant::now() + POLL_INTERVAL,
        }
    }

    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Watch::Inotify { inotify, .. } => Some(inotify.as_fd()),
            Watch::Poll { .. } => None,
        }
    }

    /// Drains pending events; true if one was about the token file. In
    /// polling mode: whether the metadata changed since the last check.
    fn drain(&mut self) -> Result<bool> {
        let (inotify, name) = match self {
            Watch::Inotify { inotify, name } => (inotify, name),
            Watch::Poll { path, seen, next } => {
                *next = Instant::now() + POLL_INTERVAL;
                let now = stamp(path);
                let changed = now != *seen;
                *seen = now;
                return Ok(changed);
            }
        };
        let mut buf = [0u8; 4096];
        let mut hit = false;
        loop {
            match inotify.read_events(&mut buf) {
                Ok(events) => {
                    let mut any = false;
                    for ev in events {
                        any = true;
                        hit |= ev.name.is_some_and(|n| n == name.as_os_str());
                    }
                    if !any {
                        return Ok(hit);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(hit),
                Err(e) => return Err(Error::io("read inotify events", e)),
            }
        }
    }
}

/// Sleeps until `until`, a signal, or a change of the watched file, whichever
/// comes first (a change is reported once the writer is done, 50 ms later).
pub fn wait(shutdown: &Shutdown, watch: &mut Watch, until: Instant) -> Result<Wake> {
    loop {
        let now = Instant::now();
        let mut timeout = until.saturating_duration_since(now);
        if timeout.is_zero() {
            return Ok(Wake::Timer);
        }
        let poll_due = match watch {
            Watch::Poll { next, .. } => {
                timeout = timeout.min(next.saturating_duration_since(now));
                true
            }
            Watch::Inotify { .. } => false,
        };
        let mut fds = vec![PollFd::new(shutdown.fd(), PollFlags::POLLIN)];
        if let Some(fd) = watch.fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let ready = match poll(&mut fds, poll_timeout(timeout)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::Other(format!("poll: {e}"))),
        };
        let sig = fds[0].revents().is_some_and(|r| !r.is_empty());
        let file = fds
            .get(1)
            .is_some_and(|f| f.revents().is_some_and(|r| !r.is_empty()))
            || (poll_due && ready == 0 && Instant::now() < until);
        drop(fds);
        if sig && shutdown.received() {
            return Ok(Wake::Signal);
        }
        if ready == 0 && !file {
            return Ok(Wake::Timer);
        }
        if file && watch.drain()? {
            // A writer that removes and recreates makes several events:
            // let it finish before reading the file.
            if shutdown.sleep(Duration::from_millis(50)) {
                return Ok(Wake::Signal);
            }
            watch.drain()?;
            return Ok(Wake::FileChanged);
        }
    }
}

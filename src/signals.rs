//! SIGTERM and SIGINT as a readable file descriptor (a self-pipe), so the
//! long-running modes can sleep in `poll` and still stop at once.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Error, Result};

pub struct Shutdown {
    rx: UnixStream,
}

impl Shutdown {
    pub fn install() -> Result<Self> {
        let (rx, tx) = UnixStream::pair().map_err(|e| Error::io("create signal pipe", e))?;
        rx.set_nonblocking(true)
            .map_err(|e| Error::io("set up signal pipe", e))?;
        for sig in [SIGTERM, SIGINT] {
            let tx = tx
                .try_clone()
                .map_err(|e| Error::io("set up signal pipe", e))?;
            signal_hook::low_level::pipe::register(sig, tx)
                .map_err(|e| Error::io("register signal handler", e))?;
        }
        Ok(Shutdown { rx })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Whether a signal has arrived (consumes the pipe's bytes).
    pub fn received(&self) -> bool {
        let mut buf = [0u8; 16];
        let mut got = false;
        while let Ok(n) = (&self.rx).read(&mut buf) {
            if n == 0 {
                break;
            }
            got = true;
        }
        got
    }

    /// Sleeps for `d` or until a signal; true if a signal came.
    pub fn sleep(&self, d: Duration) -> bool {
        let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, poll_timeout(d));
        self.received()
    }
}

/// A `poll` timeout, rounded up to whole milliseconds and capped.
pub fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d
        .as_millis()
        .saturating_add(u128::from(d.subsec_nanos() % 1_000_000 != 0));
    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

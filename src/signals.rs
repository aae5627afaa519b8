//! SIGTERM and SIGINT as a readable file descriptor (a self-pipe), so the
//! long-running modes can sleep in `poll` and still stop at once, even in
//! the middle of a retry's backoff.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Error, Result};

/// Read end of the signal pipe, once installed.
static PIPE: OnceLock<UnixStream> = OnceLock::new();
/// Set once a signal has been seen, so every waiter learns of it.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Handle of the installed signal pipe.
pub struct Shutdown(());

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
        PIPE.set(rx)
            .map_err(|_| Error::Other("signal pipe installed twice".into()))?;
        Ok(Shutdown(()))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        PIPE.get().expect("installed").as_fd()
    }

    /// Whether a signal has arrived.
    pub fn received(&self) -> bool {
        received()
    }

    /// Sleeps for `d` or until a signal; true if a signal came.
    pub fn sleep(&self, d: Duration) -> bool {
        sleep(d)
    }
}

/// Whether SIGTERM/SIGINT has arrived since [`Shutdown::install`].
///
/// The pipe is never drained: once a signal came it stays readable, so
/// every thread polling it (the main loop, each request in flight, the
/// synchronizer's workers) wakes at once, not only the first to read.
pub fn received() -> bool {
    if SIGNALLED.load(Ordering::SeqCst) {
        return true;
    }
    let Some(rx) = PIPE.get() else {
        return false;
    };
    let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
    if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
        SIGNALLED.store(true, Ordering::SeqCst);
    }
    SIGNALLED.load(Ordering::SeqCst)
}

/// The signal pipe's read end, once [`Shutdown::install`] ran: readable
/// from the first signal on.
pub fn fd() -> Option<BorrowedFd<'static>> {
    PIPE.get().map(|p| p.as_fd())
}

/// Sleeps for `d`, returning early (true) on SIGTERM/SIGINT once
/// [`Shutdown::install`] ran; a plain sleep before that.
pub fn sleep(d: Duration) -> bool {
    let Some(rx) = PIPE.get() else {
        std::thread::sleep(d);
        return false;
    };
    if received() {
        return true;
    }
    // poll's timeout tops out at about 24 days (and EINTR ends it early):
    // sleep again until the whole of `d` has passed.
    let until = crate::time::instant_after(std::time::Instant::now(), d);
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, poll_timeout(left));
        if received() {
            return true;
        }
    }
}

/// A `poll` timeout, rounded up to whole milliseconds and capped.
pub fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d
        .as_millis()
        .saturating_add(u128::from(d.subsec_nanos() % 1_000_000 != 0));
    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

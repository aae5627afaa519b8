//! The termination message: the final error line of a program that exits
//! non-zero, written where the kubelet reads it into the container's
//! `state.terminated.message` (`terminationMessagePath`,
//! `/dev/termination-log` by default), which `kubectl describe pod` shows
//! even after the container restarted.
//!
//! Best effort only: the file is written only when it already exists as a
//! regular file we may write (the kubelet creates it, also on a read-only
//! root filesystem); anything else, and any error, is ignored.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;

/// What the kubelet reads of the file (`maxMsgSize` in its container
/// runtime manager): longer messages are cut there anyway.
pub const LIMIT: usize = 4096;

/// Replaces the content of the file at `path` with `message` (at most
/// [`LIMIT`] bytes, cut on a character boundary). Never creates the file
/// and never follows a symbolic link; never blocks on a FIFO (non-blocking
/// open, then only a regular file is written).
pub fn write(path: &Path, message: &str) {
    let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW).bits())
        .open(path)
    else {
        return;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return;
    }
    let mut end = message.len().min(LIMIT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let _ = file.set_len(0);
    let _ = file.write_all(&message.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vk-termination-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_an_existing_file_and_creates_none() {
        let d = dir();
        let file = d.join("termination-log");
        std::fs::write(&file, "an older and longer message").unwrap();
        write(&file, "login failed");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "login failed");
        let missing = d.join("missing");
        write(&missing, "x");
        assert!(!missing.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let d = dir();
        let file = d.join("termination-log");
        std::fs::write(&file, "").unwrap();
        write(&file, &format!("a{}", "é".repeat(3000)));
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.len(), 4095);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_directories_and_devices_are_left_alone() {
        let d = dir();
        let target = d.join("target");
        std::fs::write(&target, "kept").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, "x");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
        write(&d, "x");
        write(Path::new("/dev/null"), "x");
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        write(&d.join("fifo"), "x"); // returns at once: no reader, no wait
        std::fs::remove_dir_all(&d).unwrap();
    }
}

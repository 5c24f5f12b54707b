//! Terminal window size.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets the window size of the terminal behind `fd` (a pty master); the foreground
/// process group gets SIGWINCH.
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is a live descriptor for the borrow's duration; TIOCSWINSZ reads one
    // `winsize` through the pointer, which points at a valid local.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

//! The agent's lowest layer: the few system calls that need `unsafe`, each wrapped in a
//! safe function whose contract the caller cannot break.
//!
//! Everything above this module is safe Rust.

pub mod fdpass;
pub mod net;
pub mod pty;
pub mod spawn;

/// Makes the calling process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans of
/// its descendants are reparented to it instead of to the machine's PID 1. The agent
/// does this as a host process so container processes become its children, as they
/// are of PID 1 in a guest.
pub fn set_child_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and touches
    // no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Restores the default action of SIGPIPE, which the Rust runtime ignores at start-up.
/// The helper calls it before creating container processes, which would otherwise
/// inherit the ignored disposition through exec.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL is not a handler function, so no code of ours runs in signal
    // context; replacing the disposition cannot break Rust invariants.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sets SIGCHLD to SIG_IGN: the kernel then reaps the caller's children (including
/// orphans reparented to it) as they exit. For the pause process.
pub fn autoreap_children() {
    // SAFETY: SIG_IGN is not a handler function; no code of ours runs in signal context.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
}

/// Forks the calling process, which must be single-threaded (the helper); fails with
/// EBUSY otherwise. Returns the child's pid in the parent, `None` in the child.
pub fn fork_single_threaded() -> nix::Result<Option<nix::unistd::Pid>> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    if threads != 1 {
        return Err(nix::Error::EBUSY);
    }
    // SAFETY: the process has exactly one thread (checked above), so the child gets a
    // consistent copy of every lock and allocator state and may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// Registers `fd` with tokio's reactor.
pub fn async_fd(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd holds one open descriptor for its whole life and always
    // reports that same descriptor, which is what `register` requires.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// Takes ownership of descriptor `fd`, inherited from the parent, if it is open.
/// For the helper, whose parent passes the container's stdio as known numbers; nothing
/// else in the process may own them.
pub fn take_inherited_fd(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if `fd` is
    // not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `fd` is open (checked above) and, by this function's contract, owned by
    // no other object of this process.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Duplicates `fd` onto descriptor number `target`, without close-on-exec, closing
/// whatever `target` was. For the helper server and its children, where the fixed
/// numbers 0–5 are owned by no object of the process.
pub fn dup_onto(fd: &impl std::os::fd::AsFd, target: std::os::fd::RawFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 touches no memory; by this function's contract no object of this
    // process owns `target`, so closing it there breaks no ownership.
    let rc = unsafe { libc::dup2(fd.as_fd().as_raw_fd(), target) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A close-on-exec duplicate, numbered `min` or above, of descriptor `fd` inherited
/// from the parent (which must be open).
pub fn dup_inherited_high(
    fd: std::os::fd::RawFd,
    min: std::os::fd::RawFd,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd` (failing with EBADF if it is not open)
    // and creates a new descriptor.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `high` was just created and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(high) })
}

//! fork + exec for a multi-threaded process, without `std::process`.
//!
//! `std::process::Child::wait` and the exec-failure path of `Command::spawn` call
//! `waitpid` on the child themselves, which races the agent's one reaper (it collects
//! every child with `waitpid(-1)`). Children started here are only ever waited for by
//! the reaper. Between fork and exec the child calls only async-signal-safe functions
//! on memory prepared before the fork.

use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::RawFd;

/// Most descriptors a child can be given besides its standard ones.
pub const MAX_FDS: usize = 8;

/// What to run and which descriptors it gets.
#[derive(Debug)]
pub struct SpawnSpec {
    pub program: CString,
    /// argv, including argv[0].
    pub args: Vec<CString>,
    /// `(source, target)`: the child gets a copy of `source` as descriptor `target`.
    /// Every other descriptor of the agent is close-on-exec.
    pub fds: Vec<(RawFd, RawFd)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("at most {MAX_FDS} descriptors can be passed")]
    TooManyFds,
    #[error("fork")]
    Fork(#[source] nix::Error),
}

/// Forks and execs `spec`, returning the child's pid. An exec failure shows as the
/// child exiting with status 127. The caller owns reaping the child.
pub fn fork_exec(spec: &SpawnSpec) -> Result<Pid, SpawnError> {
    if spec.fds.len() > MAX_FDS {
        return Err(SpawnError::TooManyFds);
    }
    let mut argv: Vec<*const libc::c_char> = spec.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut fds = [(0, 0); MAX_FDS];
    fds[..spec.fds.len()].copy_from_slice(&spec.fds);
    let nfds = spec.fds.len();
    let program = spec.program.as_ptr();

    // SAFETY: fork has no memory-safety preconditions. In the child (rc == 0) only
    // async-signal-safe calls follow, on data allocated before the fork, ending in
    // execv or _exit, so no lock held by another thread of the parent is touched.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(SpawnError::Fork(nix::Error::last())),
        // SAFETY: see above; `child` never returns.
        0 => unsafe { child(program, argv.as_ptr(), &fds[..nfds]) },
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// The child side of [`fork_exec`].
///
/// # Safety
/// Only to be called in a freshly forked child; `program` and `argv` must point at
/// NUL-terminated strings and a NULL-terminated array that outlive the call.
unsafe fn child(
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    fds: &[(RawFd, RawFd)],
) -> ! {
    // Move every source above the targets first, so one pair's target cannot clobber a
    // later pair's source.
    let mut high = [0 as RawFd; MAX_FDS];
    for (i, (src, _)) in fds.iter().enumerate() {
        // SAFETY: fcntl and dup2 are async-signal-safe and only manipulate descriptors.
        high[i] = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64) };
        if high[i] < 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(126) };
        }
    }
    for (i, (_, dst)) in fds.iter().enumerate() {
        // SAFETY: as above; dup2 clears close-on-exec on the target.
        if unsafe { libc::dup2(high[i], *dst) } < 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(126) };
        }
    }
    // SAFETY: signal, sigprocmask and execv are async-signal-safe; the set is a local.
    unsafe {
        // Undo what the Rust runtime and tokio set in the parent.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::execv(program, argv);
        libc::_exit(127)
    }
}

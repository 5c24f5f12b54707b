//! Process file descriptors: how Cocoon waits for and signals the processes of a VM,
//! whether it spawned them (its children) or re-attached to them after a restart (not
//! its children).
//!
//! A pidfd names one process for its whole life: a signal sent through it never reaches
//! another process that reused the pid, and it becomes readable once the process has
//! exited, child or not. Only a parent can read the exit status ([`PidFd::try_reap`]);
//! for anyone else the status is unknown.

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::future::poll_fn;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;

/// A pidfd registered with tokio's reactor: readable = the process has exited.
#[derive(Debug)]
pub struct PidFd {
    pid: Pid,
    fd: AsyncFd<OwnedFd>,
}

impl PidFd {
    /// Opens a pidfd for `pid`. Fails with ESRCH if no such process exists. The caller
    /// must make sure `pid` is the process it means (its own unreaped child, or a
    /// process whose identity it checks after opening: see `process::start_time`).
    /// Needs a tokio runtime.
    pub fn open(pid: Pid) -> std::io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and a flags word and touches no memory of ours;
        // it returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let raw = RawFd::try_from(raw).map_err(std::io::Error::other)?;
        // SAFETY: the kernel just returned `raw` as a new descriptor that nothing else in
        // this process owns; pidfds are close-on-exec.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // A pidfd reports EPOLLIN once the process has exited (Linux 5.3).
        // SAFETY: an OwnedFd holds one open descriptor for its whole life and always
        // reports that same descriptor, which is what registering requires.
        let fd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { pid, fd })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `sig` to the process this pidfd names. ESRCH (it has been reaped) is not
    /// an error: there is nothing left to signal.
    pub fn signal(&self, sig: Signal) {
        use std::os::fd::AsRawFd;
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number, a null
        // siginfo pointer (the kernel then fills in SI_USER itself) and flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pid = %self.pid, %sig, "pidfd_send_signal: {e}");
            }
        }
    }

    /// Resolves once the process has exited (at once if it already has).
    pub async fn exited(&self) {
        poll_fn(|cx| self.poll_exited(cx)).await
    }

    /// Polls for the exit. An error from the reactor counts as an exit: the descriptor
    /// can no longer tell, and [`PidFd::try_reap`] or a signal will show the truth.
    pub fn poll_exited(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.fd.poll_read_ready(cx) {
            // Readiness is left set: once exited, always exited.
            Poll::Ready(Ok(_guard)) => Poll::Ready(()),
            Poll::Ready(Err(e)) => {
                tracing::warn!(pid = %self.pid, "pidfd poll: {e}");
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.fd.get_ref().as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Reaps the process if it is this process's child and has exited, returning its
    /// status. `None` if it is not our child (its status is unknown to us) or has not
    /// exited yet.
    pub fn try_reap(&self) -> Option<ExitStatus> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        match waitid(Id::PIDFd(self.fd.get_ref().as_fd()), flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, sig, core)) => Some(ExitStatus::from_raw(
                sig as i32 | if core { 0x80 } else { 0 },
            )),
            Ok(_) => None,
            Err(nix::Error::ECHILD) => None,
            Err(e) => {
                tracing::warn!(pid = %self.pid, "waitid: {e}");
                None
            }
        }
    }
}

/// Waits until one of `procs` has exited and returns its index; never resolves for an
/// empty slice.
pub async fn first_exited(procs: &[&PidFd]) -> usize {
    poll_fn(|cx| {
        for (i, p) in procs.iter().enumerate() {
            if p.poll_exited(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    // The std Child is dropped unreaped on purpose: the pidfd owns the waiting.
    #[allow(clippy::zombie_processes)]
    fn spawn(args: &[&str]) -> (Pid, PidFd) {
        let child = Command::new(args[0]).args(&args[1..]).spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        (pid, PidFd::open(pid).unwrap())
    }

    #[tokio::test]
    async fn exit_status_of_a_child() {
        let (_, fd) = spawn(&["sh", "-c", "exit 7"]);
        tokio::time::timeout(Duration::from_secs(10), fd.exited())
            .await
            .unwrap();
        assert!(fd.has_exited());
        assert_eq!(fd.try_reap().unwrap().code(), Some(7));
        // Reaped: signalling is a no-op, not a stray signal to a reused pid.
        fd.signal(Signal::SIGKILL);
    }

    #[tokio::test]
    async fn signal_through_the_pidfd() {
        let (_, fd) = spawn(&["sleep", "100"]);
        assert!(!fd.has_exited());
        fd.signal(Signal::SIGTERM);
        fd.exited().await;
        assert_eq!(fd.try_reap().unwrap().signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn first_of_several() {
        let (_, a) = spawn(&["sleep", "100"]);
        let (_, b) = spawn(&["true"]);
        let i = tokio::time::timeout(Duration::from_secs(10), first_exited(&[&a, &b]))
            .await
            .unwrap();
        assert_eq!(i, 1);
        a.signal(Signal::SIGKILL);
        a.exited().await;
        a.try_reap();
        b.try_reap();
    }

    #[tokio::test]
    async fn no_such_process() {
        let e = PidFd::open(Pid::from_raw(i32::MAX)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}

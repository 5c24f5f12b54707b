//! Reaps orphaned children, PID 1's duty.
//!
//! For now every child of the agent is an orphan adopted from a process that died, so
//! reaping them all is right. When the agent starts processes of its own (containers,
//! execs), their waiters must get their statuses first: the reaper will then only reap
//! PIDs nobody claimed.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// Spawns the reaping task on the current tokio runtime.
pub fn spawn() -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_all();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Collects every exited child without blocking; returns how many.
pub fn reap_all() -> usize {
    let mut reaped = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(status) => {
                reaped += 1;
                tracing::debug!(?status, "reaped orphan");
            }
        }
    }
}

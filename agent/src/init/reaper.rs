//! The agent's one reaper: it alone calls `waitpid`, for every child, and hands each
//! exit status to whoever registered for that pid.
//!
//! The agent is PID 1 in a guest, and a child subreaper as a host process, so every
//! orphan in the guest (or below the agent) becomes its child: container processes
//! once libcontainer's intermediate process exits, the helpers the agent re-executes,
//! the pause process, and strays. Nothing else in the agent may wait for a child
//! (`std::process::Child::wait` and `tokio::process` would race this reaper), which is
//! why children are started with [`crate::sys::spawn`].
//!
//! Registering before the exit can be seen:
//! - a child the agent forks itself is registered under the reaper's lock, taken before
//!   the fork ([`Reaper::spawn`]), so its status cannot be dispatched before the waiter
//!   exists;
//! - a container process is created by a helper and its pid is learnt only afterwards,
//!   so it may already have exited. Statuses nobody claimed are kept for
//!   [`UNCLAIMED_TTL`] (at most [`UNCLAIMED_MAX`] of them), and [`Reaper::watch`] takes
//!   a kept status only if it was reaped after `not_before`, the moment the creating
//!   helper was started: an older status with the same pid belongs to an earlier
//!   process that had the pid before it was reused.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long an unclaimed exit status is kept for a late `watch`.
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(60);
/// Most unclaimed statuses kept; the oldest go first.
pub const UNCLAIMED_MAX: usize = 4096;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(c) => c,
            Self::Signaled(s) => 128 + s,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: HashMap<i32, (Instant, ExitStatus)>,
    order: VecDeque<(i32, Instant)>,
}

impl Table {
    fn keep(&mut self, pid: i32, status: ExitStatus, now: Instant) {
        while let Some(&(old, at)) = self.order.front() {
            if self.order.len() < UNCLAIMED_MAX && now.duration_since(at) < UNCLAIMED_TTL {
                break;
            }
            self.order.pop_front();
            if self.unclaimed.get(&old).is_some_and(|(t, _)| *t == at) {
                self.unclaimed.remove(&old);
            }
        }
        self.unclaimed.insert(pid, (now, status));
        self.order.push_back((pid, now));
    }
}

/// Dispatches exit statuses to registered waiters.
#[derive(Debug, Default)]
pub struct Reaper {
    table: Mutex<Table>,
}

impl Reaper {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the maps consistent (each operation is
        // a single insert or remove), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a child with `start` while holding the table, and registers for its exit
    /// before anyone can reap it.
    pub fn spawn<E>(
        &self,
        start: impl FnOnce() -> Result<Pid, E>,
    ) -> Result<(Pid, oneshot::Receiver<ExitStatus>), E> {
        let mut table = self.lock();
        let pid = start()?;
        let (tx, rx) = oneshot::channel();
        table.waiters.insert(pid.as_raw(), tx);
        Ok((pid, rx))
    }

    /// Registers for the exit of `pid`, a process that started after `not_before`. If it
    /// already exited, the receiver is ready at once.
    pub fn watch(&self, pid: Pid, not_before: Instant) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.lock();
        match table.unclaimed.remove(&pid.as_raw()) {
            Some((at, status)) if at >= not_before => {
                let _ = tx.send(status);
            }
            _ => {
                table.waiters.insert(pid.as_raw(), tx);
            }
        }
        rx
    }

    /// Collects every exited child without blocking and dispatches the statuses;
    /// returns how many were collected.
    pub fn reap_all(&self) -> usize {
        let mut reaped = 0;
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
                Ok(_) => continue, // stopped or continued: not an exit
            };
            reaped += 1;
            self.dispatch(pid, status);
        }
    }

    fn dispatch(&self, pid: Pid, status: ExitStatus) {
        let mut table = self.lock();
        match table.waiters.remove(&pid.as_raw()) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None => {
                tracing::debug!(%pid, ?status, "reaped unclaimed child");
                table.keep(pid.as_raw(), status, Instant::now());
            }
        }
    }

    /// Reaps on every SIGCHLD, on the current tokio runtime.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = self.clone();
        tokio::spawn(async move {
            loop {
                reaper.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_statuses_expire_oldest_first() {
        let mut t = Table::default();
        let start = Instant::now();
        for pid in 0..(UNCLAIMED_MAX as i32 + 5) {
            t.keep(pid, ExitStatus::Exited(0), start);
        }
        assert_eq!(t.unclaimed.len(), UNCLAIMED_MAX);
        assert!(!t.unclaimed.contains_key(&0));
        t.keep(1, ExitStatus::Exited(3), start + UNCLAIMED_TTL * 2);
        assert_eq!(t.unclaimed.len(), 1, "expired entries must go");
        assert_eq!(t.unclaimed[&1].1, ExitStatus::Exited(3));
    }

    #[test]
    fn codes_follow_the_shell() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(15).code(), 143);
    }
}

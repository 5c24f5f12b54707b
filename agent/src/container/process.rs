//! A process the agent started in a container (its init or an exec): its stdio and its
//! exit, learnt from the reaper.

use super::stdio::Pending;
use crate::cgroups::stats::oom_kills;
use crate::error::AgentError;
use crate::helper::Op;
use crate::init::reaper::ExitStatus;
use crate::io::tty::Tty;
use crate::io::{Output, Stdin};
use crate::pods::Pods;
use cocoon_proto::agent::v1::{event, Event, ExitReason, ProcessExit};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// The agent's end of a process's stdio.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: Stdin,
    pub stdout: Arc<Output>,
    /// `None` for a terminal, whose output is all on `stdout`.
    pub stderr: Option<Arc<Output>>,
    pub tty: Option<Arc<Tty>>,
}

#[derive(Debug)]
pub struct Process {
    pub exec_id: String,
    pub pid: Pid,
    pub stdio: Stdio,
    exit: watch::Receiver<Option<ProcessExit>>,
}

/// What is needed to judge an exit: the container's cgroup and its OOM count before.
#[derive(Debug, Clone)]
pub struct ExitContext {
    pub container_id: String,
    pub exec_id: String,
    pub cgroup_dir: PathBuf,
    pub oom_baseline: u64,
}

/// How a [`launch`] failed.
#[derive(Debug)]
pub enum LaunchError {
    /// The helper made no process (libcontainer removed what it had created).
    NotCreated(AgentError),
    /// The process was made but its stdio could not be finished; it was killed, and
    /// what the helper created may need removing.
    Killed(AgentError),
}

impl From<LaunchError> for AgentError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::NotCreated(e) | LaunchError::Killed(e) => e,
        }
    }
}

/// The tail that creating a container and exec share: runs `op` (create or exec)
/// through a helper with `pending`'s stdio, watches the pid the helper reports,
/// finishes the stdio (killing the process if that fails) and tracks the process.
pub async fn launch(
    pods: &Arc<Pods>,
    op: Op,
    pending: Pending,
    ctx: ExitContext,
) -> Result<Arc<Process>, LaunchError> {
    let name = op.name();
    let (child_fds, finish) = pending.take_child_fds();
    let outcome = pods
        .helpers
        .run(op, child_fds)
        .await
        .map_err(LaunchError::NotCreated)?;
    let pid = outcome.pid.ok_or_else(|| {
        LaunchError::NotCreated(AgentError::Helper {
            op: name,
            message: "no pid reported".into(),
        })
    })?;
    let exited = pods.reaper.watch(pid, outcome.started);
    let stdio = match finish.finish().await {
        Ok(s) => s,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(LaunchError::Killed(e));
        }
    };
    Ok(Process::track(pods, pid, stdio, exited, ctx))
}

impl Process {
    /// Starts following the process's exit (reported by `exited`) and announces it on
    /// the event feed.
    pub fn track(
        pods: &Arc<Pods>,
        pid: Pid,
        stdio: Stdio,
        exited: oneshot::Receiver<ExitStatus>,
        ctx: ExitContext,
    ) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        let pods = pods.clone();
        let exec_id = ctx.exec_id.clone();
        tokio::spawn(async move {
            let status = exited.await.ok();
            let exit = judge(pid, status, oom_kills(&ctx.cgroup_dir) > ctx.oom_baseline);
            tracing::info!(container = %ctx.container_id, exec = %ctx.exec_id, %pid, ?status, "process exited");
            let _ = tx.send(Some(exit));
            pods.emit(Event {
                container_id: ctx.container_id,
                exec_id: ctx.exec_id,
                kind: Some(event::Kind::Exit(exit)),
            });
        });
        Arc::new(Self {
            exec_id,
            pid,
            stdio,
            exit: rx,
        })
    }

    /// The exit, if it happened.
    pub fn exited(&self) -> Option<ProcessExit> {
        *self.exit.borrow()
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> ProcessExit {
        let mut rx = self.exit.clone();
        // An error means the tracking task is gone without an answer: only at agent
        // shutdown.
        let exit = rx.wait_for(|e| e.is_some()).await.map(|e| *e);
        exit.ok().flatten().unwrap_or_default()
    }
}

/// How the process ended, by its status and whether its cgroup saw an OOM kill.
pub fn judge(pid: Pid, status: Option<ExitStatus>, oom_killed: bool) -> ProcessExit {
    let exited_at_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let (exit_code, signal, reason) = match status {
        Some(ExitStatus::Signaled(9)) | Some(ExitStatus::Exited(137)) if oom_killed => {
            let s = status.map(|s| s.code()).unwrap_or(137);
            (s, if s == 137 { 9 } else { 0 }, ExitReason::OomKilled)
        }
        Some(ExitStatus::Signaled(sig)) => (128 + sig, sig as u32, ExitReason::Signaled),
        Some(ExitStatus::Exited(0)) => (0, 0, ExitReason::Completed),
        Some(ExitStatus::Exited(code)) => (code, 0, ExitReason::Error),
        None => (-1, 0, ExitReason::Error),
    };
    ProcessExit {
        pid: pid.as_raw(),
        exit_code,
        signal,
        reason: reason as i32,
        exited_at_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let p = Pid::from_raw(7);
        let r = |s, oom| ExitReason::try_from(judge(p, s, oom).reason).unwrap();
        assert_eq!(r(Some(ExitStatus::Exited(0)), false), ExitReason::Completed);
        assert_eq!(r(Some(ExitStatus::Exited(2)), false), ExitReason::Error);
        assert_eq!(
            r(Some(ExitStatus::Signaled(15)), false),
            ExitReason::Signaled
        );
        assert_eq!(
            r(Some(ExitStatus::Signaled(9)), true),
            ExitReason::OomKilled
        );
        assert_eq!(
            r(Some(ExitStatus::Exited(137)), true),
            ExitReason::OomKilled
        );
        assert_eq!(
            r(Some(ExitStatus::Signaled(15)), true),
            ExitReason::Signaled
        );
        let e = judge(p, Some(ExitStatus::Signaled(15)), false);
        assert_eq!((e.exit_code, e.signal), (143, 15));
    }
}

//! The agent's side of a helper: start it, send the request, read its one reply line,
//! collect its exit through the reaper.

use super::{Op, Reply, Request, HELPER_ARG, STDIO_FDS};
use crate::error::{AgentError, Result};
use crate::init::reaper::Reaper;
use crate::sys::spawn::{fork_exec, SpawnSpec};
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, Pid};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A helper taking longer than this is killed and its operation fails.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest reply line accepted.
const MAX_REPLY: usize = 64 * 1024;

/// Starts helpers: the agent's own binary with [`HELPER_ARG`].
#[derive(Debug)]
pub struct Helpers {
    pub exe: PathBuf,
    pub state_root: PathBuf,
    pub cgroup_view: Option<PathBuf>,
    pub reaper: Arc<Reaper>,
}

/// A helper's answer: the pid it reports and when the helper started (a process it
/// created cannot have exited before that).
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub pid: Option<Pid>,
    pub started: Instant,
}

impl Helpers {
    /// Runs `op`; `stdio` become the new process's stdin/stdout/stderr.
    pub async fn run(&self, op: Op, stdio: Option<[OwnedFd; 3]>) -> Result<Outcome> {
        let name = op_name(&op);
        let request = Request {
            state_root: self.state_root.clone(),
            cgroup_view: self.cgroup_view.clone(),
            op,
        };
        let mut line = serde_json::to_vec(&request).expect("requests serialize");
        line.push(b'\n');

        let io_err =
            |what: &str, e: nix::Error| AgentError::io(format!("helper {name}: {what}"), e.into());
        let (req_r, req_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
        let (reply_r, reply_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
        let mut fds = vec![(req_r.as_raw_fd(), 0), (reply_w.as_raw_fd(), 1), (2, 2)];
        if let Some(stdio) = &stdio {
            for (fd, target) in stdio.iter().zip(STDIO_FDS) {
                fds.push((fd.as_raw_fd(), target));
            }
        }
        let spec = SpawnSpec {
            program: cstring(self.exe.as_os_str().as_encoded_bytes()),
            args: vec![cstring(b"cocoon-agent"), cstring(HELPER_ARG.as_bytes())],
            fds,
        };
        let started = Instant::now();
        let (pid, exited) = self.reaper.spawn(|| fork_exec(&spec)).map_err(|e| {
            AgentError::io(format!("helper {name}: spawn"), std::io::Error::other(e))
        })?;
        drop((req_r, reply_w, stdio));

        // The request is far smaller than a pipe's buffer: this write cannot block.
        let mut req_w = std::fs::File::from(req_w);
        let _ = req_w.write_all(&line);
        drop(req_w);

        let read = read_reply(reply_r);
        let reply = match tokio::time::timeout(HELPER_TIMEOUT, read).await {
            Ok(r) => r,
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                Err(format!("no answer within {HELPER_TIMEOUT:?}"))
            }
        };
        let status = exited.await.ok();
        let reply = reply.map_err(|message| AgentError::Helper { op: name, message })?;
        if let Some(message) = reply.error {
            return Err(AgentError::Helper { op: name, message });
        }
        if status.is_some_and(|s| s.code() != 0) {
            tracing::warn!(op = name, ?status, "helper replied but exited badly");
        }
        Ok(Outcome {
            pid: reply.pid.map(Pid::from_raw),
            started,
        })
    }
}

async fn read_reply(fd: OwnedFd) -> std::result::Result<Reply, String> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.contains(&b'\n') && buf.len() < MAX_REPLY {
        let n = rx.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    if line.is_empty() {
        return Err("helper exited without a reply".into());
    }
    serde_json::from_slice(line).map_err(|e| format!("bad reply: {e}"))
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Create { .. } => "create",
        Op::Start { .. } => "start",
        Op::Exec { .. } => "exec",
        Op::Delete { .. } => "delete",
        Op::Pause(_) => "pause",
    }
}

fn cstring(bytes: &[u8]) -> CString {
    // Paths and our constant arguments contain no NUL byte.
    CString::new(bytes).unwrap_or_default()
}

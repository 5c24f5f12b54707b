//! The agent's side of a helper: hand the request to the helper server (started once,
//! it forks a child per request) or, should that fail, to a one-shot helper; read the
//! one reply line.

use super::{Op, Reply, Request, HELPER_ARG, SERVE_ARG, STDIO_FDS};
use crate::error::{AgentError, Result};
use crate::init::reaper::Reaper;
use crate::sys::fdpass::send_with_fds;
use crate::sys::spawn::{fork_exec, SpawnSpec};
use nix::fcntl::OFlag;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{pipe2, Pid};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// The agent's end of the helper server's socket, once started; `None` before,
    /// and after sending to it failed (the next request starts a new one).
    server: Mutex<Option<OwnedFd>>,
}

/// A helper's answer: the pid it reports and when the helper started (a process it
/// created cannot have exited before that).
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub pid: Option<Pid>,
    pub started: Instant,
}

impl Helpers {
    pub fn new(
        exe: PathBuf,
        state_root: PathBuf,
        cgroup_view: Option<PathBuf>,
        reaper: Arc<Reaper>,
    ) -> Self {
        Self {
            exe,
            state_root,
            cgroup_view,
            reaper,
            server: Mutex::new(None),
        }
    }

    /// Runs `op`; `stdio` become the new process's stdin/stdout/stderr.
    pub async fn run(&self, op: Op, stdio: Option<[OwnedFd; 3]>) -> Result<Outcome> {
        let name = op.name();
        let request = Request {
            state_root: self.state_root.clone(),
            cgroup_view: self.cgroup_view.clone(),
            op,
        };
        let mut line = serde_json::to_vec(&request).expect("requests serialize");
        line.push(b'\n');

        let io_err =
            |what: &str, e: nix::Error| AgentError::io(format!("helper {name}: {what}"), e.into());
        let (reply_r, reply_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
        let started = Instant::now();
        let one_shot = match self.send_to_server(&line, &reply_w, stdio.as_ref()) {
            Ok(()) => {
                // The server's child holds them now; ours must close for EOF.
                drop((reply_w, stdio));
                None
            }
            Err(e) => {
                tracing::warn!(op = name, "helper server unusable ({e}); one-shot helper");
                Some(self.spawn_one_shot(name, &line, reply_w, stdio)?)
            }
        };

        let read = read_reply(reply_r);
        let reply = match tokio::time::timeout(HELPER_TIMEOUT, read).await {
            Ok(r) => r,
            Err(_) => {
                // A server's child ends itself (alarm) after the same time.
                if let Some((pid, _)) = &one_shot {
                    let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
                }
                Err(format!("no answer within {HELPER_TIMEOUT:?}"))
            }
        };
        if let Some((_, exited)) = one_shot {
            let status = exited.await.ok();
            if reply.as_ref().is_ok_and(|r| r.error.is_none())
                && status.is_some_and(|s| s.code() != 0)
            {
                tracing::warn!(op = name, ?status, "helper replied but exited badly");
            }
        }
        let reply = reply.map_err(|message| AgentError::Helper { op: name, message })?;
        if let Some(message) = reply.error {
            return Err(AgentError::Helper { op: name, message });
        }
        Ok(Outcome {
            pid: reply.pid.map(Pid::from_raw),
            started,
        })
    }

    /// Hands the request to the helper server, starting one if there is none or the
    /// last one is gone.
    fn send_to_server(
        &self,
        line: &[u8],
        reply_w: &OwnedFd,
        stdio: Option<&[OwnedFd; 3]>,
    ) -> std::io::Result<()> {
        let mut fds = vec![reply_w.as_raw_fd()];
        fds.extend(stdio.into_iter().flatten().map(|fd| fd.as_raw_fd()));
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for _ in 0..2 {
            let sock = match server.take() {
                Some(sock) => sock,
                None => self.start_server()?,
            };
            match send_with_fds(sock.as_raw_fd(), line, &fds) {
                Ok(()) => {
                    *server = Some(sock);
                    return Ok(());
                }
                // Gone or stuck: dropping our end ends it; try a new one once.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("helper server")))
    }

    /// Starts the helper server; returns the agent's end of its socket.
    fn start_server(&self) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let spec = SpawnSpec {
            program: cstring(self.exe.as_os_str().as_encoded_bytes()),
            args: vec![
                cstring(b"cocoon-agent"),
                cstring(HELPER_ARG.as_bytes()),
                cstring(SERVE_ARG.as_bytes()),
            ],
            fds: vec![(theirs.as_raw_fd(), 0), (2, 2)],
        };
        let (pid, exited) = self
            .reaper
            .spawn(|| fork_exec(&spec))
            .map_err(std::io::Error::other)?;
        drop(theirs);
        tokio::spawn(async move {
            if let Ok(status) = exited.await {
                tracing::debug!(%pid, ?status, "helper server exited");
            }
        });
        tracing::debug!(%pid, "helper server started");
        Ok(ours)
    }

    /// Starts a one-shot helper for the request; returns its pid and exit.
    fn spawn_one_shot(
        &self,
        name: &'static str,
        line: &[u8],
        reply_w: OwnedFd,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<(
        Pid,
        tokio::sync::oneshot::Receiver<crate::init::reaper::ExitStatus>,
    )> {
        let io_err =
            |what: &str, e: nix::Error| AgentError::io(format!("helper {name}: {what}"), e.into());
        let (req_r, req_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
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
        let spawned = self.reaper.spawn(|| fork_exec(&spec)).map_err(|e| {
            AgentError::io(format!("helper {name}: spawn"), std::io::Error::other(e))
        })?;
        drop((req_r, reply_w, stdio));

        // The request is far smaller than a pipe's buffer: this write cannot block.
        let mut req_w = std::fs::File::from(req_w);
        let _ = req_w.write_all(line);
        Ok(spawned)
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

fn cstring(bytes: &[u8]) -> CString {
    // Paths and our constant arguments contain no NUL byte.
    CString::new(bytes).unwrap_or_default()
}

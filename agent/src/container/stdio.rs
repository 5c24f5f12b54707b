//! Setting up a new process's stdio: pipes, or a console socket for a terminal.

use super::process::Stdio;
use crate::error::{AgentError, Result};
use crate::io::tty::{ConsoleSocket, Tty, TtySource};
use crate::io::{Output, Stdin};
use crate::pods::Pods;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;
use std::os::fd::OwnedFd;
use tokio::net::unix::pipe;

/// Stdio being set up: what the helper passes on, and the agent's ends.
pub enum Pending {
    Pipes {
        child: [OwnedFd; 3],
        stdio: Stdio,
    },
    Terminal {
        console: ConsoleSocket,
        size: Option<(u16, u16)>,
    },
}

impl Pending {
    pub fn new(pods: &Pods, terminal: bool, stdin: bool, size: Option<(u16, u16)>) -> Result<Self> {
        if terminal {
            let dir = pods.cfg.state_dir.join("tty");
            std::fs::create_dir_all(&dir).map_err(|e| AgentError::io("create tty dir", e))?;
            let path = dir.join(format!("{}.sock", pods.serial()));
            let console =
                ConsoleSocket::bind(&path).map_err(|e| AgentError::io("bind console socket", e))?;
            return Ok(Self::Terminal { console, size });
        }
        let io = |what: &'static str| move |e: std::io::Error| AgentError::io(what, e);
        let (in_r, in_tx) = if stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io("stdin pipe")(e.into()))?;
            let tx = pipe::Sender::from_owned_fd(w).map_err(io("stdin pipe"))?;
            (r, Stdin::pipe(tx))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(io("open /dev/null"))?;
            (OwnedFd::from(null), Stdin::none())
        };
        let (out_rx, out_w) = output_pipe().map_err(io("stdout pipe"))?;
        let (err_rx, err_w) = output_pipe().map_err(io("stderr pipe"))?;
        let stdout = Output::new();
        stdout.pump(out_rx);
        let stderr = Output::new();
        stderr.pump(err_rx);
        Ok(Self::Pipes {
            child: [in_r, out_w, err_w],
            stdio: Stdio {
                stdin: in_tx,
                stdout,
                stderr: Some(stderr),
                tty: None,
            },
        })
    }

    /// The console socket's path, for a terminal.
    pub fn console_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Self::Terminal { console, .. } => Some(console.path.clone()),
            Self::Pipes { .. } => None,
        }
    }

    /// Splits off the descriptors the helper gets.
    pub fn take_child_fds(self) -> (Option<[OwnedFd; 3]>, Finish) {
        match self {
            Self::Pipes { child, stdio } => (Some(child), Finish::Ready(stdio)),
            Self::Terminal { console, size } => (None, Finish::Terminal { console, size }),
        }
    }
}

/// The agent's ends, once the helper succeeded.
pub enum Finish {
    Ready(Stdio),
    Terminal {
        console: ConsoleSocket,
        size: Option<(u16, u16)>,
    },
}

impl Finish {
    pub async fn finish(self) -> Result<Stdio> {
        match self {
            Self::Ready(stdio) => Ok(stdio),
            Self::Terminal { console, size } => {
                let master = console
                    .receive()
                    .await
                    .map_err(|e| AgentError::io("receive terminal", e))?;
                let tty = Tty::new(master).map_err(|e| AgentError::io("terminal", e))?;
                if let Some((rows, cols)) = size {
                    tty.resize(rows, cols)
                        .map_err(|e| AgentError::io("resize terminal", e))?;
                }
                let stdout = Output::new();
                stdout.pump(TtySource(tty.clone()));
                Ok(Stdio {
                    stdin: Stdin::tty(tty.clone()),
                    stdout,
                    stderr: None,
                    tty: Some(tty),
                })
            }
        }
    }
}

/// Kernel buffer asked for an output pipe (default 64 KiB): a writer blocks, and the
/// pump wakes, less often. Kernel memory, outside the agent's per-stream buffer.
const OUTPUT_PIPE_SIZE: i32 = 256 * 1024;

fn output_pipe() -> std::io::Result<(pipe::Receiver, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
    // Best effort: refused past the user's pipe limits, and then the default stays.
    let _ = fcntl(&r, FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE));
    Ok((pipe::Receiver::from_owned_fd(r)?, w))
}

//! The helper as a server: started once by the agent (`__helper serve`), it forks one
//! child per request, and that child does exactly what a one-shot helper does.
//!
//! What it saves per operation is the agent's fork of itself, the exec of the agent
//! binary and its start-up (loading, relocation); the operation still runs in a fresh,
//! single-threaded process, so nothing carries over from one request to the next.
//!
//! Descriptor 0 is a `SOCK_SEQPACKET` socket to the agent. A request is one message:
//! the request JSON, and as SCM_RIGHTS the reply pipe's write end followed, for a
//! process without a terminal, by its stdin/stdout/stderr. The child gets the reply
//! pipe as descriptor 1 and the stdio as 3/4/5, like a one-shot helper. The server
//! ends when the agent's end closes.

use super::{respond, Reply, STDIO_FDS};
use crate::helper::run::HELPER_TIMEOUT;
use crate::sys::fdpass::recv_with_fds;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

/// Largest request message.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Lowest descriptor the server moves its socket to, out of the way of 0–5.
const SOCKET_FD_MIN: RawFd = 100;

pub fn serve() -> ExitCode {
    let sock = match setup() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("helper server: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        reap_children();
        let (request, fds) = match receive(&sock) {
            Ok(Some(r)) => r,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("helper server: receive: {e}");
                return ExitCode::FAILURE;
            }
        };
        match crate::sys::fork_single_threaded() {
            Ok(Some(_child)) => drop(fds),
            Ok(None) => {
                drop(sock);
                child(&request, fds)
            }
            Err(e) => {
                // The request's reply pipe gets the error; the agent reads it.
                let reply = Reply {
                    pid: None,
                    error: Some(format!("helper server: fork: {e}")),
                };
                if let Some(reply_fd) = fds.into_iter().next() {
                    let _ = write_reply(std::fs::File::from(reply_fd), &reply);
                }
            }
        }
    }
}

/// Moves the agent's socket out of the way (close-on-exec, so no container process
/// can ever hold it) and puts /dev/null at 0 and 1.
fn setup() -> std::io::Result<OwnedFd> {
    let sock = crate::sys::dup_inherited_high(0, SOCKET_FD_MIN)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in [0, 1] {
        crate::sys::dup_onto(&null, target)?;
    }
    Ok(sock)
}

/// Collects children that finished, without waiting.
fn reap_children() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if matches!(status, WaitStatus::StillAlive) {
            break;
        }
    }
}

/// The next request: its bytes and its descriptors; `None` when the agent is gone.
fn receive(sock: &OwnedFd) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let got = recv_with_fds(sock.as_raw_fd(), &mut buf)?;
    if got.len == 0 && got.fds.is_empty() {
        return Ok(None);
    }
    // A cut request becomes empty: its child answers "bad request".
    buf.truncate(if got.truncated { 0 } else { got.len });
    Ok(Some((buf, got.fds)))
}

/// The forked child: a one-shot helper on `request`.
fn child(request: &[u8], fds: Vec<OwnedFd>) -> ! {
    // Dies on its own if the operation hangs: the agent gave up on it by then.
    nix::unistd::alarm::set(HELPER_TIMEOUT.as_secs() as u32);
    let code = match place_fds(fds) {
        Ok(()) => {
            let parsed = serde_json::from_slice(request).map_err(|e| e.to_string());
            let reply = respond(parsed);
            let ok = reply.error.is_none();
            let _ = write_reply(std::io::stdout().lock(), &reply);
            if ok {
                0
            } else {
                1
            }
        }
        Err(_) => 126,
    };
    std::process::exit(code)
}

/// Puts the reply pipe at 1 and the stdio, if given, at 3/4/5; all without
/// close-on-exec, as a one-shot helper inherits them.
fn place_fds(fds: Vec<OwnedFd>) -> std::io::Result<()> {
    if fds.is_empty() || (fds.len() != 1 && fds.len() != 1 + STDIO_FDS.len()) {
        return Err(std::io::Error::other("bad descriptors"));
    }
    // Above the targets first, so one target cannot clobber a later source.
    let high = fds
        .iter()
        .map(|fd| crate::sys::dup_inherited_high(fd.as_raw_fd(), SOCKET_FD_MIN))
        .collect::<std::io::Result<Vec<_>>>()?;
    drop(fds);
    let targets = std::iter::once(1).chain(STDIO_FDS);
    for (fd, target) in high.iter().zip(targets) {
        // dup2 leaves the target without close-on-exec.
        crate::sys::dup_onto(fd, target)?;
    }
    Ok(())
}

fn write_reply(mut out: impl std::io::Write, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

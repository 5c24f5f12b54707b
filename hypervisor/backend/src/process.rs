//! Spawning and signalling the processes a VM is made of.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Starts `program` with stdout discarded and stderr in `log`, in a process group of its
/// own so signals meant for the runtime (a terminal's ^C) do not reach the VM.
pub fn spawn<I, S>(program: &Path, args: I, log: &Path) -> std::io::Result<Child>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let stderr = File::create(log)?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

/// The pid of a child that was just spawned.
pub fn pid_of(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
}

/// Sends `sig`, ignoring a process that is already gone.
pub fn signal(pid: Pid, sig: Signal) {
    let _ = kill(pid, sig);
}

/// Waits until `path` exists, failing if `child` exits first or `timeout` passes.
pub async fn wait_for_path(
    path: &Path,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), WaitError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(WaitError::Exited(status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("exited with {0}")]
    Exited(std::process::ExitStatus),
    #[error("timed out")]
    Timeout,
}

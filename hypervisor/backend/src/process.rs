//! The processes a VM is made of: spawning them, knowing them again, waiting for them.

use crate::pidfd::PidFd;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// What a process does for its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// QEMU or cocoon-vmm: the VM itself.
    Vmm,
    /// `cocoon-vsock`, QEMU's vhost-user vsock device.
    VsockBackend,
    /// `virtiofsd`, QEMU's vhost-user virtio-fs device.
    Virtiofsd,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Vmm => "VMM",
            Role::VsockBackend => "vsock device",
            Role::Virtiofsd => "virtiofsd",
        })
    }
}

/// One process of a VM, known by pid and start time, watched through a pidfd.
#[derive(Debug, Clone)]
pub struct VmProcess {
    pub role: Role,
    pub pid: Pid,
    /// `/proc/<pid>/stat` field 22: with the pid, names this process and no other.
    pub start_time: u64,
    pub fd: Arc<PidFd>,
}

impl VmProcess {
    /// Sends `sig` (through the pidfd: never to a process that reused the pid).
    pub fn signal(&self, sig: Signal) {
        self.fd.signal(sig);
    }

    /// Kills the process, waits for it to end and reaps it if it is our child.
    pub async fn kill_and_reap(&self) {
        self.signal(Signal::SIGKILL);
        self.fd.exited().await;
        self.fd.try_reap();
    }
}

/// Starts `program` with stdout discarded and stderr in `log`, in a process group of its
/// own so signals meant for the runtime (a terminal's ^C) do not reach the VM, and
/// nothing of the runtime's ends it: the VM outlives a runtime that is killed.
pub fn spawn<I, S>(role: Role, program: &Path, args: I, log: &Path) -> std::io::Result<VmProcess>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let stderr = File::create(log)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()?;
    let pid = i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(std::io::Error::other)?;
    // Our unreaped child: the pid cannot name another process yet.
    let known = PidFd::open(pid).and_then(|fd| Ok((start_time(pid)?, fd)));
    match known {
        Ok((start_time, fd)) => {
            // The std handle is dropped unreaped; the pidfd does the waiting from now on.
            drop(child);
            Ok(VmProcess {
                role,
                pid,
                start_time,
                fd: Arc::new(fd),
            })
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The start time of `pid` (clock ticks after boot, `/proc/<pid>/stat` field 22).
pub fn start_time(pid: Pid) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no start time"),
        )
    })
}

/// Field 22 of a stat line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest: " <state(3)> <ppid(4)> …"; field 22 is the 20th after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Waits until `path` exists, failing if `proc` exits first or `timeout` passes.
pub async fn wait_for_path(
    path: &Path,
    proc: &VmProcess,
    timeout: Duration,
) -> Result<(), WaitError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if path.exists() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitError::Timeout);
        }
        tokio::select! {
            _ = proc.fd.exited() => return Err(WaitError::Exited(proc.fd.try_reap())),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("exited{}", .0.map(|s| format!(" with {s}")).unwrap_or_default())]
    Exited(Option<ExitStatus>),
    #[error("timed out")]
    Timeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_a_tricky_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("42 (x) S 1"), None);
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = Pid::this();
        assert_eq!(start_time(me).unwrap(), start_time(me).unwrap());
    }

    #[tokio::test]
    async fn spawned_process_is_watched_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let p = spawn(
            Role::Vmm,
            Path::new("sh"),
            ["-c", "echo oops >&2; exit 3"],
            &dir.path().join("log"),
        )
        .unwrap();
        assert!(p.start_time > 0);
        let e = wait_for_path(&dir.path().join("never"), &p, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "exited with exit status: 3");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(log, "oops\n");
    }

    #[tokio::test]
    async fn path_appearing_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let script = format!("touch {}; sleep 100", flag.display());
        let p = spawn(
            Role::Virtiofsd,
            Path::new("sh"),
            ["-c", &script],
            &dir.path().join("log"),
        )
        .unwrap();
        wait_for_path(&flag, &p, Duration::from_secs(10))
            .await
            .unwrap();
        p.kill_and_reap().await;
        assert!(p.fd.has_exited());
    }
}

//! What the runtime persists about a running VM to find it again after a restart, and
//! how the processes it names are known again.
//!
//! A pid alone could name a different process by now (pids are reused), so each
//! process is recorded with its start time (`/proc/<pid>/stat` field 22). Re-attaching
//! opens a pidfd for the pid first and reads the start time after: if it matches, the
//! pidfd names the recorded process (which then held the pid all along), and every
//! later signal and wait goes through that pidfd.

use crate::accel::Detected;
use crate::config::Backend;
use crate::launch::RunPaths;
use crate::pidfd::PidFd;
use crate::process::{self, Role, VmProcess};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A running VM, as [`crate::Vm::record`] describes it and [`crate::Vm::reattach`]
/// takes it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub backend: Backend,
    pub run_dir: PathBuf,
    pub vsock_socket: PathBuf,
    pub console_log: PathBuf,
    pub accel: Detected,
    pub vmm: ProcessRecord,
    /// The device processes beside the VMM (QEMU backend): vsock device, virtiofsd.
    #[serde(default)]
    pub devices: Vec<ProcessRecord>,
}

/// One process of a VM: pid and start time name it, and no later process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRecord {
    pub role: Role,
    pub pid: i32,
    /// `/proc/<pid>/stat` field 22 (clock ticks after boot).
    pub start_time: u64,
}

impl From<&VmProcess> for ProcessRecord {
    fn from(p: &VmProcess) -> Self {
        Self {
            role: p.role,
            pid: p.pid.as_raw(),
            start_time: p.start_time,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    #[error("bad record: {0}")]
    Record(&'static str),
    #[error("the {role} (pid {pid}) is gone")]
    Gone { role: Role, pid: i32 },
    #[error(
        "pid {pid} is no longer the {role}: it started at tick {found}, the record says {recorded}"
    )]
    Replaced {
        role: Role,
        pid: i32,
        recorded: u64,
        found: u64,
    },
    #[error("the {role} (pid {pid}): open its pidfd")]
    Pidfd {
        role: Role,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

impl VmRecord {
    /// Checks the record is shaped as Cocoon writes them: its files in its run
    /// directory, one VMM, the devices of its backend. A record that fails this is not
    /// acted on at all (nothing is killed or removed on its word).
    pub fn check(&self) -> Result<(), ReattachError> {
        let bad = |why| Err(ReattachError::Record(why));
        if !self.run_dir.is_absolute() || self.run_dir.parent().is_none() {
            return bad("run_dir must be an absolute directory below /");
        }
        let paths = RunPaths::new(&self.run_dir);
        if self.vsock_socket != paths.vsock_socket || self.console_log != paths.console_log {
            return bad("vsock_socket and console_log must be the run directory's");
        }
        if self.vmm.role != Role::Vmm {
            return bad("vmm.role must be vmm");
        }
        let all = std::iter::once(&self.vmm).chain(&self.devices);
        if all.clone().any(|p| p.pid <= 0) {
            return bad("pids must be positive");
        }
        let roles: Vec<Role> = self.devices.iter().map(|d| d.role).collect();
        let expected: &[Role] = match self.backend {
            Backend::Builtin => &[],
            Backend::Qemu => &[Role::VsockBackend],
        };
        let fits = expected.iter().all(|r| roles.contains(r))
            && roles.iter().all(|r| *r != Role::Vmm)
            && roles
                .iter()
                .enumerate()
                .all(|(i, r)| !roles[..i].contains(r))
            && (self.backend == Backend::Qemu || roles.is_empty());
        if !fits {
            return bad("devices do not match the backend");
        }
        Ok(())
    }
}

/// Knows a recorded process again: opens its pidfd, then checks it is alive and has the
/// recorded start time.
pub fn attach(rec: &ProcessRecord) -> Result<VmProcess, ReattachError> {
    let (role, pid) = (rec.role, rec.pid);
    let gone = || ReattachError::Gone { role, pid };
    let fd = match PidFd::open(Pid::from_raw(pid)) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(gone()),
        Err(source) => return Err(ReattachError::Pidfd { role, pid, source }),
    };
    let found = match process::start_time(Pid::from_raw(pid)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
        Err(source) => return Err(ReattachError::Pidfd { role, pid, source }),
    };
    if found != rec.start_time {
        return Err(ReattachError::Replaced {
            role,
            pid,
            recorded: rec.start_time,
            found,
        });
    }
    if fd.has_exited() {
        // Ours but dead, waiting for its parent to reap it (us, if it is our child).
        fd.try_reap();
        return Err(gone());
    }
    Ok(VmProcess {
        role,
        pid: Pid::from_raw(pid),
        start_time: found,
        fd: Arc::new(fd),
    })
}

/// After a failed re-attach: ends the processes that were known again and removes the
/// run directory.
pub async fn abandon(attached: &[VmProcess], run_dir: &Path) {
    for p in attached {
        tracing::warn!(role = %p.role, pid = %p.pid, "re-attach failed: killing");
        p.kill_and_reap().await;
    }
    if let Err(e) = std::fs::remove_dir_all(run_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(run_dir = %run_dir.display(), "remove run dir: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;

    fn record() -> VmRecord {
        let paths = RunPaths::new(Path::new("/run/cocoon/vms/p1"));
        VmRecord {
            backend: Backend::Qemu,
            run_dir: paths.run_dir,
            vsock_socket: paths.vsock_socket,
            console_log: paths.console_log,
            accel: Detected {
                accel: Accel::Tcg,
                reason: "forced by configuration".into(),
            },
            vmm: ProcessRecord {
                role: Role::Vmm,
                pid: 4242,
                start_time: 123456,
            },
            devices: vec![
                ProcessRecord {
                    role: Role::Virtiofsd,
                    pid: 4240,
                    start_time: 123450,
                },
                ProcessRecord {
                    role: Role::VsockBackend,
                    pid: 4241,
                    start_time: 123451,
                },
            ],
        }
    }

    #[test]
    fn serde_round_trip() {
        let r = record();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""role":"vsock_backend""#), "{json}");
        assert!(json.contains(r#""backend":"qemu""#), "{json}");
        assert!(json.contains(r#""accel":{"accel":"tcg""#), "{json}");
        let back: VmRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let extra = json.replacen('{', r#"{"surprise":1,"#, 1);
        assert!(serde_json::from_str::<VmRecord>(&extra).is_err());
    }

    #[test]
    fn odd_records_are_refused() {
        assert!(record().check().is_ok());
        let mut r = record();
        r.run_dir = "/".into();
        assert!(r.check().is_err());
        let mut r = record();
        r.console_log = "/etc/passwd".into();
        assert!(r.check().is_err());
        let mut r = record();
        r.devices.pop();
        assert!(r.check().unwrap_err().to_string().contains("backend"));
        let mut r = record();
        r.backend = Backend::Builtin;
        assert!(r.check().is_err());
        r.devices.clear();
        assert!(r.check().is_ok());
        let mut r = record();
        r.vmm.pid = 0;
        assert!(r.check().is_err());
        let mut r = record();
        r.devices[0].role = Role::VsockBackend;
        assert!(r.check().is_err(), "duplicate role");
    }

    #[tokio::test]
    async fn a_reused_pid_is_not_ours() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start_time = process::start_time(Pid::from_raw(pid)).unwrap();
        let rec = ProcessRecord {
            role: Role::Vmm,
            pid,
            start_time,
        };
        let p = attach(&rec).unwrap();
        assert_eq!(p.pid.as_raw(), pid);
        let wrong = ProcessRecord {
            start_time: start_time + 1,
            ..rec
        };
        let e = attach(&wrong).unwrap_err();
        assert!(matches!(e, ReattachError::Replaced { .. }), "{e}");
        assert!(e.to_string().contains("no longer the VMM"), "{e}");
        child.kill().unwrap();
        child.wait().unwrap();
        let e = attach(&rec).unwrap_err();
        assert!(matches!(e, ReattachError::Gone { .. }), "{e}");
    }
}

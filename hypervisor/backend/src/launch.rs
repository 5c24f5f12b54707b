//! Starting a VM's processes, per backend, and the files they use in its run directory.

use crate::builtin::{self, BuiltinPaths};
use crate::config::{Programs, ValidVmConfig};
use crate::console;
use crate::process::{self, WaitError};
use crate::qemu;
use crate::vm::VmError;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Child;

/// The hybrid vsock socket inside the run directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
const VHOST_USER_SOCKET: &str = "vhost-user.sock";
const CONSOLE_LOG: &str = "console.log";
const VMM_LOG: &str = "vmm.log";
const VSOCK_LOG: &str = "vsock-backend.log";

/// How long the vsock device (its own process, or inside cocoon-vmm) may take to bind
/// its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// The files of one VM in its run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub run_dir: PathBuf,
    pub vsock_socket: PathBuf,
    pub vhost_user_socket: PathBuf,
    pub console_log: PathBuf,
    /// The VMM's standard error.
    pub vmm_log: PathBuf,
    /// The vsock device process's standard error (QEMU backend).
    pub vsock_log: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path) -> RunPaths {
        RunPaths {
            run_dir: run_dir.to_path_buf(),
            vsock_socket: run_dir.join(VSOCK_SOCKET),
            vhost_user_socket: run_dir.join(VHOST_USER_SOCKET),
            console_log: run_dir.join(CONSOLE_LOG),
            vmm_log: run_dir.join(VMM_LOG),
            vsock_log: run_dir.join(VSOCK_LOG),
        }
    }
}

/// A process of the VM.
pub struct Proc {
    pub child: Child,
    pub pid: Pid,
}

/// The processes of a started VM.
pub struct Launched {
    pub vmm: Proc,
    /// The vhost-user vsock device process (QEMU backend only).
    pub vsock: Option<Proc>,
}

/// Starts the processes of `cfg`'s backend. On error nothing is left running.
pub async fn launch(cfg: &ValidVmConfig, paths: &RunPaths) -> Result<Launched, VmError> {
    match &cfg.programs {
        Programs::Qemu {
            qemu,
            vsock_backend,
        } => launch_qemu(cfg, qemu, vsock_backend, paths).await,
        Programs::Builtin { vmm } => launch_builtin(cfg, vmm, paths).await,
    }
}

/// The vsock device process first (QEMU connects to its vhost-user socket), then QEMU.
async fn launch_qemu(
    cfg: &ValidVmConfig,
    qemu: &Path,
    vsock_backend: &Path,
    paths: &RunPaths,
) -> Result<Launched, VmError> {
    let mut vsock = spawn_vsock_backend(cfg, vsock_backend, paths).await?;
    let qemu_paths = qemu::QemuPaths {
        console_log: paths.console_log.clone(),
        vhost_user_socket: paths.vhost_user_socket.clone(),
    };
    let args = qemu::qemu_args(cfg, &qemu_paths, qemu::host_tsc_khz());
    let vmm = spawn(qemu, args, &paths.vmm_log);
    match vmm {
        Ok(vmm) => Ok(Launched {
            vmm,
            vsock: Some(vsock),
        }),
        Err(e) => {
            process::signal(vsock.pid, Signal::SIGKILL);
            let _ = vsock.child.wait().await;
            Err(e)
        }
    }
}

/// `cocoon-vmm` alone; it is up once its vsock socket exists.
async fn launch_builtin(
    cfg: &ValidVmConfig,
    vmm: &Path,
    paths: &RunPaths,
) -> Result<Launched, VmError> {
    let builtin_paths = BuiltinPaths {
        console_log: paths.console_log.clone(),
        vsock_socket: paths.vsock_socket.clone(),
    };
    let args = builtin::vmm_args(cfg, &builtin_paths);
    let mut proc = spawn(vmm, args, &paths.vmm_log)?;
    match process::wait_for_path(&paths.vsock_socket, &mut proc.child, SOCKET_WAIT).await {
        Ok(()) => Ok(Launched {
            vmm: proc,
            vsock: None,
        }),
        Err(e) => {
            if matches!(e, WaitError::Timeout) {
                let _ = proc.child.kill().await;
            }
            Err(VmError::VmmStart {
                why: e.to_string(),
                log: console::tail(&paths.vmm_log, 5),
            })
        }
    }
}

async fn spawn_vsock_backend(
    cfg: &ValidVmConfig,
    program: &Path,
    paths: &RunPaths,
) -> Result<Proc, VmError> {
    let args: Vec<std::ffi::OsString> = vec![
        "--socket".into(),
        paths.vhost_user_socket.clone().into(),
        "--uds".into(),
        paths.vsock_socket.clone().into(),
        "--guest-cid".into(),
        cfg.config.guest_cid.to_string().into(),
    ];
    let mut proc = spawn(program, args, &paths.vsock_log)?;
    match process::wait_for_path(&paths.vhost_user_socket, &mut proc.child, SOCKET_WAIT).await {
        Ok(()) => Ok(proc),
        Err(e) => {
            if matches!(e, WaitError::Timeout) {
                let _ = proc.child.kill().await;
            }
            Err(VmError::VsockBackend {
                why: e.to_string(),
                log: console::tail(&paths.vsock_log, 5),
            })
        }
    }
}

fn spawn<I, S>(program: &Path, args: I, log: &Path) -> Result<Proc, VmError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let spawn_err = |source| VmError::Spawn {
        program: program.to_path_buf(),
        source,
    };
    let child = process::spawn(program, args, log).map_err(spawn_err)?;
    let pid = process::pid_of(&child)
        .ok_or_else(|| spawn_err(std::io::Error::other("exited at once")))?;
    Ok(Proc { child, pid })
}

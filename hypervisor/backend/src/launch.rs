//! Starting a VM's processes, per backend, and the files they use in its run directory.

use crate::builtin::api_client::ApiClient;
use crate::builtin::{self, BuiltinPaths};
use crate::config::{Programs, ValidVmConfig};
use crate::console;
use crate::process::{self, Role, VmProcess, WaitError};
use crate::qemu;
use crate::virtiofs;
use crate::vm::VmError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hybrid vsock socket inside the run directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// cocoon-vmm's control API socket inside the run directory.
pub const API_SOCKET: &str = "api.sock";
const VHOST_USER_SOCKET: &str = "vhost-user.sock";
const VIRTIOFS_SOCKET: &str = "virtiofs.sock";
const CONSOLE_LOG: &str = "console.log";
const VMM_LOG: &str = "vmm.log";
const VSOCK_LOG: &str = "vsock-backend.log";
const VIRTIOFSD_LOG: &str = "virtiofsd.log";
/// cocoon-vmm's metrics (JSON, rewritten every second and at the end).
pub const METRICS: &str = "metrics.json";

/// How long a device process (or cocoon-vmm its API socket) may take to bind its
/// socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// The files of one VM in its run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub run_dir: PathBuf,
    pub vsock_socket: PathBuf,
    /// cocoon-vmm's control API (builtin backend).
    pub api_socket: PathBuf,
    pub vhost_user_socket: PathBuf,
    /// virtiofsd's vhost-user socket (QEMU backend with a shared filesystem).
    pub virtiofs_socket: PathBuf,
    pub console_log: PathBuf,
    /// The VMM's standard error.
    pub vmm_log: PathBuf,
    /// The vsock device process's standard error (QEMU backend).
    pub vsock_log: PathBuf,
    /// virtiofsd's standard error.
    pub virtiofsd_log: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path) -> RunPaths {
        RunPaths {
            run_dir: run_dir.to_path_buf(),
            vsock_socket: run_dir.join(VSOCK_SOCKET),
            api_socket: run_dir.join(API_SOCKET),
            vhost_user_socket: run_dir.join(VHOST_USER_SOCKET),
            virtiofs_socket: run_dir.join(VIRTIOFS_SOCKET),
            console_log: run_dir.join(CONSOLE_LOG),
            vmm_log: run_dir.join(VMM_LOG),
            vsock_log: run_dir.join(VSOCK_LOG),
            virtiofsd_log: run_dir.join(VIRTIOFSD_LOG),
        }
    }

    /// Where a process of this VM writes its standard error.
    pub fn log_of(&self, role: Role) -> &Path {
        match role {
            Role::Vmm => &self.vmm_log,
            Role::VsockBackend => &self.vsock_log,
            Role::Virtiofsd => &self.virtiofsd_log,
        }
    }
}

/// The processes of a started VM.
#[derive(Debug)]
pub struct Launched {
    pub vmm: VmProcess,
    /// The device processes beside the VMM: virtiofsd (either backend), the vsock
    /// device (QEMU backend).
    pub devices: Vec<VmProcess>,
}

/// Starts the processes of `cfg`'s backend. On error nothing is left running.
pub async fn launch(cfg: &ValidVmConfig, paths: &RunPaths) -> Result<Launched, VmError> {
    // Device processes (virtiofsd, the vsock device) start first and are pushed here,
    // so whatever fails afterwards, they are ended.
    let mut devices = Vec::new();
    let vmm = match &cfg.programs {
        Programs::Qemu {
            qemu,
            vsock_backend,
            virtiofsd,
        } => {
            launch_qemu(
                cfg,
                qemu,
                vsock_backend,
                virtiofsd.as_deref(),
                paths,
                &mut devices,
            )
            .await
        }
        Programs::Builtin { vmm, virtiofsd } => {
            launch_builtin(cfg, vmm, virtiofsd.as_deref(), paths, &mut devices).await
        }
    };
    match vmm {
        Ok(vmm) => Ok(Launched { vmm, devices }),
        Err(e) => {
            for d in &devices {
                d.kill_and_reap().await;
            }
            Err(e)
        }
    }
}

/// The device processes first (QEMU connects to their vhost-user sockets at start),
/// then QEMU. Started devices are pushed onto `devices`, for the caller to end on error.
async fn launch_qemu(
    cfg: &ValidVmConfig,
    qemu: &Path,
    vsock_backend: &Path,
    virtiofsd: Option<&Path>,
    paths: &RunPaths,
    devices: &mut Vec<VmProcess>,
) -> Result<VmProcess, VmError> {
    start_virtiofsd(cfg, virtiofsd, paths, devices).await?;
    let args: Vec<OsString> = vec![
        "--socket".into(),
        paths.vhost_user_socket.clone().into(),
        "--uds".into(),
        paths.vsock_socket.clone().into(),
        "--guest-cid".into(),
        cfg.config.guest_cid.to_string().into(),
    ];
    let proc = spawn_device(
        Role::VsockBackend,
        vsock_backend,
        args,
        paths,
        &paths.vhost_user_socket,
    )
    .await;
    devices.push(proc.map_err(|(why, log)| VmError::VsockBackend { why, log })?);

    let qemu_paths = qemu::QemuPaths {
        console_log: paths.console_log.clone(),
        vhost_user_socket: paths.vhost_user_socket.clone(),
        virtiofs_socket: paths.virtiofs_socket.clone(),
    };
    let args = qemu::qemu_args(cfg, &qemu_paths, qemu::host_tsc_khz());
    spawn(Role::Vmm, qemu, args, &paths.vmm_log)
}

/// `cocoon-vmm` alone: started with its API socket, then the VM configured and
/// started over it. The VM runs (its vsock socket exists) once the start is answered.
async fn launch_builtin(
    cfg: &ValidVmConfig,
    vmm: &Path,
    virtiofsd: Option<&Path>,
    paths: &RunPaths,
    devices: &mut Vec<VmProcess>,
) -> Result<VmProcess, VmError> {
    start_virtiofsd(cfg, virtiofsd, paths, devices).await?;
    let builtin_paths = BuiltinPaths {
        console_log: paths.console_log.clone(),
        vsock_socket: paths.vsock_socket.clone(),
        metrics: paths.run_dir.join(METRICS),
        api_socket: paths.api_socket.clone(),
        virtiofs_socket: paths.virtiofs_socket.clone(),
    };
    let proc = spawn(
        Role::Vmm,
        vmm,
        builtin::vmm_args(&builtin_paths),
        &paths.vmm_log,
    )?;
    let started = async {
        process::wait_for_path(&paths.api_socket, &proc, SOCKET_WAIT)
            .await
            .map_err(|e| format!("no API socket: {e}"))?;
        let api = ApiClient::new(&paths.api_socket);
        let config = builtin::vmm_config(cfg, &builtin_paths);
        // A VMM that dies mid-request ends the request with it.
        builtin::configure_and_start(&api, &config)
            .await
            .map_err(|e| e.to_string())
    };
    match started.await {
        Ok(()) => Ok(proc),
        Err(why) => {
            proc.kill_and_reap().await;
            Err(VmError::VmmStart {
                why,
                log: console::tail(&paths.vmm_log, 5),
            })
        }
    }
}

/// virtiofsd for a config with a shared filesystem (both backends: the VMM connects
/// to its socket when it builds the VM), pushed onto `devices`.
async fn start_virtiofsd(
    cfg: &ValidVmConfig,
    virtiofsd: Option<&Path>,
    paths: &RunPaths,
    devices: &mut Vec<VmProcess>,
) -> Result<(), VmError> {
    if let (Some(fs), Some(program)) = (&cfg.config.shared_fs, virtiofsd) {
        let args = virtiofs::virtiofsd_args(&fs.host_dir, &paths.virtiofs_socket);
        let proc = spawn_device(
            Role::Virtiofsd,
            program,
            args,
            paths,
            &paths.virtiofs_socket,
        )
        .await;
        devices.push(proc.map_err(|(why, log)| VmError::SharedFs { why, log })?);
    }
    Ok(())
}

/// Starts a device process and waits for its vhost-user socket. On failure the process
/// is gone and the error is (why, tail of its log).
async fn spawn_device(
    role: Role,
    program: &Path,
    args: Vec<OsString>,
    paths: &RunPaths,
    socket: &Path,
) -> Result<VmProcess, (String, String)> {
    let log = paths.log_of(role);
    let proc = process::spawn(role, program, args, log)
        .map_err(|e| (format!("start {}: {e}", program.display()), String::new()))?;
    match process::wait_for_path(socket, &proc, SOCKET_WAIT).await {
        Ok(()) => Ok(proc),
        Err(e) => {
            if matches!(e, WaitError::Timeout) {
                proc.kill_and_reap().await;
            }
            Err((e.to_string(), console::tail(log, 5)))
        }
    }
}

fn spawn<I, S>(role: Role, program: &Path, args: I, log: &Path) -> Result<VmProcess, VmError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    process::spawn(role, program, args, log).map_err(|source| VmError::Spawn {
        program: program.to_path_buf(),
        source,
    })
}

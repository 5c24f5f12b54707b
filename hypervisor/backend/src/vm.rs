//! A running VM: its processes, its run directory, and how it ends.

use crate::accel::Detected;
use crate::config::{Backend, ValidVmConfig};
use crate::console;
use crate::exit::{classify, Circumstances, ExitReason, VmExit};
use crate::hybrid_vsock::{self, HybridError};
use crate::process::{self, WaitError};
use crate::qemu;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::watch;

/// The hybrid vsock socket inside the run directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
const VHOST_USER_SOCKET: &str = "vhost-user.sock";
const CONSOLE_LOG: &str = "console.log";
const VMM_LOG: &str = "vmm.log";
const VSOCK_LOG: &str = "vsock-backend.log";

/// How many console lines an exit or error carries.
pub const CONSOLE_TAIL_LINES: usize = 40;
/// How long the vsock device may take to bind its socket.
const BACKEND_START: Duration = Duration::from_secs(5);
/// After the VMM is gone, how long the vsock device gets to notice and exit.
const BACKEND_LINGER: Duration = Duration::from_secs(2);
/// After SIGTERM, how long the VMM gets before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("run_dir {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock device did not start ({why}): {log}")]
    VsockBackend { why: String, log: String },
    #[error("connect to the guest")]
    Connect(#[from] HybridError),
}

/// A started VM. Dropping it kills the VM's processes and removes its run directory;
/// [`Vm::stop`] and [`Vm::kill`] end it and report how.
#[derive(Debug)]
pub struct Vm {
    run_dir: PathBuf,
    vsock_socket: PathBuf,
    console_log: PathBuf,
    vmm_pid: Pid,
    vsock_pid: Pid,
    accel: Detected,
    stop_requested: Arc<AtomicBool>,
    exit: watch::Receiver<Option<VmExit>>,
}

impl Vm {
    /// Launches the VM of `cfg`: creates its run directory (which must not exist yet),
    /// starts the vsock device, then the VMM. Returns once the VMM process runs; the
    /// guest is booting.
    pub async fn start(cfg: &ValidVmConfig) -> Result<Vm, VmError> {
        let run_dir = cfg.config.run_dir.clone();
        create_run_dir(&run_dir)?;
        let mut cleanup = RunDirGuard(Some(run_dir.clone()));
        let vhost_socket = run_dir.join(VHOST_USER_SOCKET);
        let vsock_socket = run_dir.join(VSOCK_SOCKET);
        let console_log = run_dir.join(CONSOLE_LOG);

        let mut vsock = spawn_vsock_backend(cfg, &run_dir, &vhost_socket, &vsock_socket).await?;
        let vsock_pid = process::pid_of(&vsock).ok_or_else(|| VmError::VsockBackend {
            why: "exited at once".into(),
            log: String::new(),
        })?;
        let vmm = match cfg.config.backend {
            Backend::Qemu => {
                let paths = qemu::QemuPaths {
                    console_log: console_log.clone(),
                    vhost_user_socket: vhost_socket,
                };
                let args = qemu::qemu_args(cfg, &paths, qemu::host_tsc_khz());
                process::spawn(&cfg.qemu, args, &run_dir.join(VMM_LOG)).map_err(|source| {
                    VmError::Spawn {
                        program: cfg.qemu.clone(),
                        source,
                    }
                })
            }
        };
        let vmm = match vmm {
            Ok(child) => child,
            Err(e) => {
                process::signal(vsock_pid, Signal::SIGKILL);
                let _ = vsock.wait().await;
                return Err(e);
            }
        };
        let Some(vmm_pid) = process::pid_of(&vmm) else {
            process::signal(vsock_pid, Signal::SIGKILL);
            let _ = vsock.wait().await;
            return Err(VmError::Spawn {
                program: cfg.qemu.clone(),
                source: std::io::Error::other("exited at once"),
            });
        };
        tracing::info!(run_dir = %run_dir.display(), accel = %cfg.accel.accel, reason = %cfg.accel.reason, "VM started");

        let stop_requested = Arc::new(AtomicBool::new(false));
        let (tx, exit) = watch::channel(None);
        let supervisor = Supervisor {
            run_dir: run_dir.clone(),
            stop_requested: stop_requested.clone(),
        };
        cleanup.0 = None; // the supervisor owns the run directory now
        tokio::spawn(supervisor.run(vmm, vsock, tx));
        Ok(Vm {
            run_dir,
            vsock_socket,
            console_log,
            vmm_pid,
            vsock_pid,
            accel: cfg.accel.clone(),
            stop_requested,
            exit,
        })
    }

    /// The hybrid vsock socket: `CONNECT <port>\n` reaches the guest's vsock `port`.
    pub fn vsock_socket(&self) -> &Path {
        &self.vsock_socket
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The VMM's pid.
    pub fn pid(&self) -> i32 {
        self.vmm_pid.as_raw()
    }

    /// The acceleration the VM runs with, and why it was chosen.
    pub fn accel(&self) -> &Detected {
        &self.accel
    }

    /// One attempt to open a stream to the guest's vsock `port`.
    pub async fn connect_vsock(&self, port: u32) -> Result<UnixStream, VmError> {
        Ok(hybrid_vsock::connect(&self.vsock_socket, port).await?)
    }

    /// The last lines of the guest console (while it runs; after the exit, see
    /// [`VmExit::console_tail`]).
    pub fn console_tail(&self, lines: usize) -> String {
        console::tail(&self.console_log, lines)
    }

    /// How the VM ended, if it has.
    pub fn exit(&self) -> Option<VmExit> {
        self.exit.borrow().clone()
    }

    /// Waits until the VM has ended and everything it left is cleaned up.
    pub async fn wait(&self) -> VmExit {
        let mut rx = self.exit.clone();
        let result = rx.wait_for(Option::is_some).await;
        match result {
            Ok(exit) => exit.clone().unwrap_or_else(lost_supervisor),
            Err(_) => lost_supervisor(),
        }
    }

    /// Waits `grace` for the guest to end on its own (after the agent was asked to shut
    /// down), then terminates the VMM, then kills it.
    pub async fn stop(&self, grace: Duration) -> VmExit {
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            return exit;
        }
        self.stop_requested.store(true, Ordering::SeqCst);
        if self.exit().is_none() {
            process::signal(self.vmm_pid, Signal::SIGTERM);
        }
        if let Ok(exit) = tokio::time::timeout(TERM_GRACE, self.wait()).await {
            return exit;
        }
        self.kill().await
    }

    /// Kills the VMM at once.
    pub async fn kill(&self) -> VmExit {
        self.stop_requested.store(true, Ordering::SeqCst);
        if self.exit().is_none() {
            process::signal(self.vmm_pid, Signal::SIGKILL);
        }
        self.wait().await
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            tracing::warn!(run_dir = %self.run_dir.display(), "VM dropped while running: killing it");
            self.stop_requested.store(true, Ordering::SeqCst);
            process::signal(self.vmm_pid, Signal::SIGKILL);
            process::signal(self.vsock_pid, Signal::SIGKILL);
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

fn lost_supervisor() -> VmExit {
    VmExit {
        code: None,
        signal: None,
        reason: ExitReason::VmmFailed("the VM's supervisor ended".into()),
        console_tail: String::new(),
    }
}

fn create_run_dir(run_dir: &Path) -> Result<(), VmError> {
    let err = |source| VmError::RunDir {
        path: run_dir.to_path_buf(),
        source,
    };
    if let Some(parent) = run_dir.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::create_dir(run_dir).map_err(err)
}

/// Removes a run directory on an early return from [`Vm::start`].
struct RunDirGuard(Option<PathBuf>);

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn spawn_vsock_backend(
    cfg: &ValidVmConfig,
    run_dir: &Path,
    vhost_socket: &Path,
    vsock_socket: &Path,
) -> Result<Child, VmError> {
    let log = run_dir.join(VSOCK_LOG);
    let args: Vec<std::ffi::OsString> = vec![
        "--socket".into(),
        vhost_socket.into(),
        "--uds".into(),
        vsock_socket.into(),
        "--guest-cid".into(),
        cfg.config.guest_cid.to_string().into(),
    ];
    let mut child =
        process::spawn(&cfg.vsock_backend, args, &log).map_err(|source| VmError::Spawn {
            program: cfg.vsock_backend.clone(),
            source,
        })?;
    match process::wait_for_path(vhost_socket, &mut child, BACKEND_START).await {
        Ok(()) => Ok(child),
        Err(e) => {
            if matches!(e, WaitError::Timeout) {
                let _ = child.kill().await;
            }
            Err(VmError::VsockBackend {
                why: e.to_string(),
                log: console::tail(&log, 5),
            })
        }
    }
}

/// Waits for the VM's processes, classifies the end, cleans up, publishes the exit.
struct Supervisor {
    run_dir: PathBuf,
    stop_requested: Arc<AtomicBool>,
}

impl Supervisor {
    async fn run(self, mut vmm: Child, mut vsock: Child, tx: watch::Sender<Option<VmExit>>) {
        let mut backend_failure = None;
        let status = tokio::select! {
            biased;
            status = vmm.wait() => status,
            status = vsock.wait() => {
                // The device also exits when QEMU closes the vhost-user connection on
                // its way out; only a VMM that keeps running means the device failed.
                match tokio::time::timeout(BACKEND_LINGER, vmm.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let why = match status {
                            Ok(s) => format!("exited with {s}"),
                            Err(e) => e.to_string(),
                        };
                        let log = console::tail(&self.run_dir.join(VSOCK_LOG), 5);
                        backend_failure = Some(format!("{why}: {log}"));
                        let _ = vmm.start_kill();
                        vmm.wait().await
                    }
                }
            }
        };
        // Without its frontend the vsock device exits by itself; make sure of it.
        if backend_failure.is_none()
            && tokio::time::timeout(BACKEND_LINGER, vsock.wait())
                .await
                .is_err()
        {
            tracing::warn!("vsock device outlived the VMM: killing it");
            let _ = vsock.kill().await;
        }
        let console_text = console::tail(&self.run_dir.join(CONSOLE_LOG), 400);
        let vmm_stderr = console::tail(&self.run_dir.join(VMM_LOG), 20);
        let (code, signal, reason) = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                let how = Circumstances {
                    stopped_by_us: self.stop_requested.load(Ordering::SeqCst),
                };
                let reason = match backend_failure {
                    Some(why) => ExitReason::VsockBackendFailed(why),
                    None => classify(status, how, &console_text, &vmm_stderr),
                };
                (status.code(), status.signal(), reason)
            }
            Err(e) => (None, None, ExitReason::VmmFailed(format!("wait: {e}"))),
        };
        let exit = VmExit {
            code,
            signal,
            reason,
            console_tail: console::last_lines(&console_text, CONSOLE_TAIL_LINES),
        };
        tracing::info!(run_dir = %self.run_dir.display(), %exit, "VM ended");
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(run_dir = %self.run_dir.display(), "remove run dir: {e}");
            }
        }
        let _ = tx.send(Some(exit));
    }
}

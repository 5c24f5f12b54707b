//! A running VM: its processes, its run directory, and how it ends.

use crate::accel::Detected;
use crate::builtin;
use crate::config::{Programs, ValidVmConfig};
use crate::console;
use crate::exit::{ExitReason, VmExit};
use crate::hybrid_vsock::{self, HybridError};
use crate::launch::{launch, RunPaths};
use crate::process;
use crate::supervisor::Supervisor;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::watch;

pub use crate::launch::VSOCK_SOCKET;

/// How many console lines an exit or error carries.
pub const CONSOLE_TAIL_LINES: usize = 40;
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
    #[error("VMM did not start ({why}): {log}")]
    VmmStart { why: String, log: String },
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
    /// The vsock device process (QEMU backend).
    vsock_pid: Option<Pid>,
    accel: Detected,
    stop_requested: Arc<AtomicBool>,
    exit: watch::Receiver<Option<VmExit>>,
}

impl Vm {
    /// Launches the VM of `cfg`: creates its run directory (which must not exist yet)
    /// and starts the backend's processes (QEMU: the vsock device, then QEMU; builtin:
    /// `cocoon-vmm`, until its vsock socket exists). Returns once the VMM runs; the
    /// guest is booting.
    pub async fn start(cfg: &ValidVmConfig) -> Result<Vm, VmError> {
        let run_dir = cfg.config.run_dir.clone();
        create_run_dir(&run_dir)?;
        let mut cleanup = RunDirGuard(Some(run_dir.clone()));
        let paths = RunPaths::new(&run_dir);
        let launched = launch(cfg, &paths).await?;
        tracing::info!(run_dir = %run_dir.display(), accel = %cfg.accel.accel, reason = %cfg.accel.reason, "VM started");

        let stop_requested = Arc::new(AtomicBool::new(false));
        let (tx, exit) = watch::channel(None);
        let vm = Vm {
            run_dir,
            vsock_socket: paths.vsock_socket.clone(),
            console_log: paths.console_log.clone(),
            vmm_pid: launched.vmm.pid,
            vsock_pid: launched.vsock.as_ref().map(|p| p.pid),
            accel: cfg.accel.clone(),
            stop_requested: stop_requested.clone(),
            exit,
        };
        let supervisor = Supervisor {
            paths,
            stop_requested,
            signal_exit_code: match cfg.programs {
                Programs::Qemu { .. } => None,
                Programs::Builtin { .. } => Some(builtin::EXIT_SIGNALLED),
            },
        };
        cleanup.0 = None; // the supervisor owns the run directory now
        tokio::spawn(supervisor.run(launched, tx));
        Ok(vm)
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
            if let Some(pid) = self.vsock_pid {
                process::signal(pid, Signal::SIGKILL);
            }
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

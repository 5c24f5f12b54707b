//! A running VM: its processes, its run directory, and how it ends.

use crate::accel::Detected;
use crate::builtin;
use crate::config::{Backend, ValidVmConfig};
use crate::console;
use crate::exit::{ExitReason, VmExit};
use crate::hybrid_vsock::{self, HybridError};
use crate::launch::{launch, Launched, RunPaths};
use crate::process::VmProcess;
use crate::record::{self, ProcessRecord, ReattachError, VmRecord};
use crate::supervisor::Supervisor;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

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
    #[error("virtiofsd did not start ({why}): {log}")]
    SharedFs { why: String, log: String },
    #[error("VMM did not start ({why}): {log}")]
    VmmStart { why: String, log: String },
    #[error("connect to the guest")]
    Connect(#[from] HybridError),
    /// The recorded VM cannot be taken back; what was left of it has been ended and
    /// its run directory removed (unless the record itself was refused).
    #[error("re-attach to the VM in {}", run_dir.display())]
    Reattach {
        run_dir: PathBuf,
        #[source]
        source: ReattachError,
    },
}

/// A started (or re-attached) VM, the single owner of its processes. Dropping it kills
/// them and removes its run directory; [`Vm::stop`] and [`Vm::kill`] end it and report
/// how; [`Vm::detach`] lets it run on unsupervised.
#[derive(Debug)]
pub struct Vm {
    backend: Backend,
    run_dir: PathBuf,
    vsock_socket: PathBuf,
    console_log: PathBuf,
    vmm: VmProcess,
    /// The device processes (QEMU backend): vsock device, virtiofsd.
    devices: Vec<VmProcess>,
    accel: Detected,
    stop_requested: Arc<AtomicBool>,
    exit: watch::Receiver<Option<VmExit>>,
    /// Tells the supervisor to let go; taken by [`Vm::detach`].
    detach: Option<oneshot::Sender<()>>,
}

impl Vm {
    /// Launches the VM of `cfg`: creates its run directory (which must not exist yet)
    /// and starts the backend's processes (QEMU: virtiofsd when a shared filesystem is
    /// configured and the vsock device, each until its socket exists, then QEMU;
    /// builtin: `cocoon-vmm`, then the VM configured and started over its control API,
    /// whose errors come back as [`VmError::VmmStart`] with the VMM's message).
    /// Returns once the VMM runs; the guest is booting.
    pub async fn start(cfg: &ValidVmConfig) -> Result<Vm, VmError> {
        let run_dir = cfg.config.run_dir.clone();
        create_run_dir(&run_dir)?;
        let mut cleanup = RunDirGuard(Some(run_dir.clone()));
        let paths = RunPaths::new(&run_dir);
        let launched = launch(cfg, &paths).await?;
        tracing::info!(run_dir = %run_dir.display(), accel = %cfg.accel.accel, reason = %cfg.accel.reason, "VM started");
        cleanup.0 = None; // the supervisor owns the run directory now
        Ok(Self::supervise(
            cfg.config.backend,
            paths,
            cfg.accel.clone(),
            launched,
        ))
    }

    /// Takes back a VM that a previous runtime started and recorded ([`Vm::record`]):
    /// every recorded process must be alive and be the same process (pid and start
    /// time), and is then supervised through its pidfd as if started here.
    ///
    /// The processes are not this runtime's children (unless it detached them itself),
    /// so their exit status cannot be read: a VM that ends on its own later is reported
    /// as [`ExitReason::StatusUnknown`] (or a kernel panic, or a device failure, which
    /// are still told apart; [`Vm::stop`] and [`Vm::kill`] give `Stopped`).
    ///
    /// If a process is gone or its pid now names another process, the VM is not taken
    /// back: the processes that are still ours are killed, the run directory removed,
    /// and the error says which process failed and how. A record not shaped as Cocoon
    /// writes them is refused without touching anything.
    pub async fn reattach(record: &VmRecord) -> Result<Vm, VmError> {
        let fail = |source| VmError::Reattach {
            run_dir: record.run_dir.clone(),
            source,
        };
        record.check().map_err(fail)?;
        let mut attached = Vec::new();
        for rec in std::iter::once(&record.vmm).chain(&record.devices) {
            match record::attach(rec) {
                Ok(p) => attached.push(p),
                Err(e) => {
                    record::abandon(&attached, &record.run_dir).await;
                    return Err(fail(e));
                }
            }
        }
        let vmm = attached.remove(0);
        let launched = Launched {
            vmm,
            devices: attached,
        };
        tracing::info!(run_dir = %record.run_dir.display(), pid = %launched.vmm.pid, "VM re-attached");
        Ok(Self::supervise(
            record.backend,
            RunPaths::new(&record.run_dir),
            record.accel.clone(),
            launched,
        ))
    }

    fn supervise(backend: Backend, paths: RunPaths, accel: Detected, launched: Launched) -> Vm {
        let stop_requested = Arc::new(AtomicBool::new(false));
        let (tx, exit) = watch::channel(None);
        let (detach, detach_rx) = oneshot::channel();
        let vm = Vm {
            backend,
            run_dir: paths.run_dir.clone(),
            vsock_socket: paths.vsock_socket.clone(),
            console_log: paths.console_log.clone(),
            vmm: launched.vmm.clone(),
            devices: launched.devices.clone(),
            accel,
            stop_requested: stop_requested.clone(),
            exit,
            detach: Some(detach),
        };
        let supervisor = Supervisor {
            paths,
            stop_requested,
            signal_exit_code: match backend {
                Backend::Qemu => None,
                Backend::Builtin => Some(builtin::EXIT_SIGNALLED),
            },
            detach: detach_rx,
        };
        tokio::spawn(supervisor.run(launched, tx));
        vm
    }

    /// What a runtime persists to take this VM back after a restart.
    pub fn record(&self) -> VmRecord {
        VmRecord {
            backend: self.backend,
            run_dir: self.run_dir.clone(),
            vsock_socket: self.vsock_socket.clone(),
            console_log: self.console_log.clone(),
            accel: self.accel.clone(),
            vmm: ProcessRecord::from(&self.vmm),
            devices: self.devices.iter().map(ProcessRecord::from).collect(),
        }
    }

    /// Forgets the VM without ending it: its processes run on (in their own process
    /// group, so the runtime's exit does not reach them) and its run directory stays,
    /// for a later [`Vm::reattach`]. For a runtime that exits gracefully and leaves its
    /// VMs running.
    pub fn detach(mut self) {
        if let Some(tx) = self.detach.take() {
            let _ = tx.send(());
        }
        tracing::info!(run_dir = %self.run_dir.display(), pid = %self.vmm.pid, "detaching VM");
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
        self.vmm.pid.as_raw()
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
            self.vmm.signal(Signal::SIGTERM);
        }
        if let Ok(exit) = tokio::time::timeout(TERM_GRACE, self.wait()).await {
            return exit;
        }
        self.kill().await
    }

    /// Kills the VMM at once (its device processes follow).
    pub async fn kill(&self) -> VmExit {
        self.stop_requested.store(true, Ordering::SeqCst);
        if self.exit().is_none() {
            self.vmm.signal(Signal::SIGKILL);
        }
        self.wait().await
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let detached = self.detach.is_none();
        if !detached && self.exit.borrow().is_none() {
            tracing::warn!(run_dir = %self.run_dir.display(), "VM dropped while running: killing it");
            self.stop_requested.store(true, Ordering::SeqCst);
            for p in std::iter::once(&self.vmm).chain(&self.devices) {
                p.signal(Signal::SIGKILL);
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

//! Waits for a VM's processes, classifies the end, cleans up, publishes the exit.
//!
//! Every process is watched through its pidfd, so a VM Cocoon started (its children:
//! exit statuses known) and a VM it re-attached to after a restart (not its children:
//! statuses unknown) are supervised alike.

use crate::console;
use crate::exit::{classify, Circumstances, ExitReason, VmExit};
use crate::launch::{Launched, RunPaths};
use crate::pidfd::{first_exited, PidFd};
use crate::process::{Role, VmProcess};
use crate::vm::CONSOLE_TAIL_LINES;
use nix::sys::signal::Signal;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// After the VMM is gone, how long the device processes get to notice and exit; and
/// after a device process exits, how long the VMM gets to show it was on its way out.
const DEVICE_LINGER: Duration = Duration::from_secs(2);

pub struct Supervisor {
    pub paths: RunPaths,
    pub stop_requested: Arc<AtomicBool>,
    /// The exit code with which the VMM reports that a signal ended it, if it has one.
    pub signal_exit_code: Option<i32>,
    /// Fires when the VM is detached: stop supervising, end and remove nothing.
    pub detach: oneshot::Receiver<()>,
}

impl Supervisor {
    pub async fn run(self, launched: Launched, tx: watch::Sender<Option<VmExit>>) {
        let mut detach = self.detach;
        let (status, device_failure) = tokio::select! {
            biased;
            Ok(()) = &mut detach => {
                tracing::info!(run_dir = %self.paths.run_dir.display(), "VM detached");
                return;
            }
            ended = wait(&self.paths, &launched, &self.stop_requested) => ended,
        };
        let console_text = console::tail(&self.paths.console_log, 400);
        let vmm_stderr = console::tail(&self.paths.vmm_log, 20);
        let how = Circumstances {
            stopped_by_us: self.stop_requested.load(Ordering::SeqCst),
            signal_exit_code: self.signal_exit_code,
        };
        let reason =
            device_failure.unwrap_or_else(|| classify(status, how, &console_text, &vmm_stderr));
        let exit = {
            use std::os::unix::process::ExitStatusExt;
            VmExit {
                code: status.and_then(|s| s.code()),
                signal: status.and_then(|s| s.signal()),
                reason,
                console_tail: console::last_lines(&console_text, CONSOLE_TAIL_LINES),
            }
        };
        let run_dir = &self.paths.run_dir;
        tracing::info!(run_dir = %run_dir.display(), %exit, "VM ended");
        if let Err(e) = std::fs::remove_dir_all(run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(run_dir = %run_dir.display(), "remove run dir: {e}");
            }
        }
        let _ = tx.send(Some(exit));
    }
}

/// Waits for the VMM and its device processes, until all are gone. Returns the VMM's
/// status (`None`: not our child) and, if a device died while the VMM ran on, the
/// failure (the VMM is then killed).
///
/// A device exits 0 when QEMU disconnects on its way out, which can be seen before
/// QEMU's own exit. So a device that exits first has failed if its status says so
/// (a signal or a non-zero code), or, when its status is unknown or 0, if the VMM is
/// still running `DEVICE_LINGER` later. An end Cocoon asked for is never a device
/// failure.
async fn wait(
    paths: &RunPaths,
    l: &Launched,
    stop_requested: &AtomicBool,
) -> (Option<ExitStatus>, Option<ExitReason>) {
    let devices: Vec<&PidFd> = l.devices.iter().map(|d| &*d.fd).collect();
    let mut failure = None;
    tokio::select! {
        biased;
        _ = l.vmm.fd.exited() => {}
        i = first_exited(&devices) => {
            let device = &l.devices[i];
            let status = device.fd.try_reap();
            let failed = status.is_some_and(|s| !s.success())
                || tokio::time::timeout(DEVICE_LINGER, l.vmm.fd.exited()).await.is_err();
            if failed && !stop_requested.load(Ordering::SeqCst) {
                failure = Some(device_failed(paths, device, status));
                l.vmm.signal(Signal::SIGKILL);
            }
            l.vmm.fd.exited().await;
        }
    }
    let status = l.vmm.fd.try_reap();
    // Without their frontend the device processes exit by themselves; make sure of it.
    let deadline = tokio::time::Instant::now() + DEVICE_LINGER;
    for d in &l.devices {
        if tokio::time::timeout_at(deadline, d.fd.exited())
            .await
            .is_err()
        {
            tracing::warn!(role = %d.role, pid = %d.pid, "device process outlived the VMM: killing it");
            d.signal(Signal::SIGKILL);
            d.fd.exited().await;
        }
        d.fd.try_reap();
    }
    (status, failure)
}

fn device_failed(paths: &RunPaths, device: &VmProcess, status: Option<ExitStatus>) -> ExitReason {
    let how = match status {
        Some(status) => format!("exited with {status}"),
        None => "exited".to_string(),
    };
    let why = format!("{how}: {}", console::tail(paths.log_of(device.role), 5));
    match device.role {
        Role::Virtiofsd => ExitReason::SharedFsFailed(why),
        Role::VsockBackend | Role::Vmm => ExitReason::VsockBackendFailed(why),
    }
}

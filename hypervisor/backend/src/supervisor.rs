//! Waits for a VM's processes, classifies the end, cleans up, publishes the exit.

use crate::console;
use crate::exit::{classify, Circumstances, ExitReason, VmExit};
use crate::launch::{Launched, Proc, RunPaths};
use crate::vm::CONSOLE_TAIL_LINES;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// After the VMM is gone, how long the vsock device process gets to notice and exit.
const BACKEND_LINGER: Duration = Duration::from_secs(2);

pub struct Supervisor {
    pub paths: RunPaths,
    pub stop_requested: Arc<AtomicBool>,
    /// The exit code with which the VMM reports that a signal ended it, if it has one.
    pub signal_exit_code: Option<i32>,
}

impl Supervisor {
    pub async fn run(self, launched: Launched, tx: watch::Sender<Option<VmExit>>) {
        let Launched { mut vmm, vsock } = launched;
        let (status, backend_failure) = match vsock {
            None => (vmm.child.wait().await, None),
            Some(vsock) => self.wait_with_backend(&mut vmm, vsock).await,
        };
        let console_text = console::tail(&self.paths.console_log, 400);
        let vmm_stderr = console::tail(&self.paths.vmm_log, 20);
        let (code, signal, reason) = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                let how = Circumstances {
                    stopped_by_us: self.stop_requested.load(Ordering::SeqCst),
                    signal_exit_code: self.signal_exit_code,
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
        let run_dir = &self.paths.run_dir;
        tracing::info!(run_dir = %run_dir.display(), %exit, "VM ended");
        if let Err(e) = std::fs::remove_dir_all(run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(run_dir = %run_dir.display(), "remove run dir: {e}");
            }
        }
        let _ = tx.send(Some(exit));
    }

    /// Waits for the VMM and the vsock device process; returns the VMM's status and, if
    /// the device died while the VMM ran on, why (the VMM is then killed).
    async fn wait_with_backend(
        &self,
        vmm: &mut Proc,
        mut vsock: Proc,
    ) -> (std::io::Result<ExitStatus>, Option<String>) {
        let mut backend_failure = None;
        let status = tokio::select! {
            biased;
            status = vmm.child.wait() => status,
            status = vsock.child.wait() => {
                // The device also exits when QEMU closes the vhost-user connection on
                // its way out; only a VMM that keeps running means the device failed.
                match tokio::time::timeout(BACKEND_LINGER, vmm.child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let why = match status {
                            Ok(s) => format!("exited with {s}"),
                            Err(e) => e.to_string(),
                        };
                        let log = console::tail(&self.paths.vsock_log, 5);
                        backend_failure = Some(format!("{why}: {log}"));
                        let _ = vmm.child.start_kill();
                        vmm.child.wait().await
                    }
                }
            }
        };
        // Without its frontend the vsock device exits by itself; make sure of it.
        if backend_failure.is_none()
            && tokio::time::timeout(BACKEND_LINGER, vsock.child.wait())
                .await
                .is_err()
        {
            tracing::warn!("vsock device outlived the VMM: killing it");
            let _ = vsock.child.kill().await;
        }
        (status, backend_failure)
    }
}

//! How a VM ended, and why.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// The end of a VM, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// The VMM process's exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed the VMM process, if one did.
    pub signal: Option<i32>,
    pub reason: ExitReason,
    /// The last lines of the guest console.
    pub console_tail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest shut itself down (or restarted, which the VMM turns into an exit).
    Shutdown,
    /// The guest kernel panicked; the panic line.
    KernelPanic(String),
    /// Cocoon stopped or killed the VMM.
    Stopped,
    /// Something else killed the VMM with a signal.
    Killed,
    /// The VMM failed on its own; the tail of its error output.
    VmmFailed(String),
    /// The vsock device process died, so the VM was ended.
    VsockBackendFailed(String),
    /// virtiofsd (the shared filesystem's device process) died, so the VM was ended.
    SharedFsFailed(String),
    /// The VMM ended while Cocoon watched it as a re-attached process, not its child
    /// (after a runtime restart): its exit status cannot be read, so a guest shutdown,
    /// an outside kill and a VMM failure look alike. A kernel panic (on the console)
    /// and an end Cocoon asked for are still told apart.
    StatusUnknown,
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "unknown status".into(),
        };
        match &self.reason {
            ExitReason::Shutdown => write!(f, "guest shut down ({status})"),
            ExitReason::KernelPanic(line) => write!(f, "guest kernel panic: {line}"),
            ExitReason::Stopped => write!(f, "stopped by cocoon ({status})"),
            ExitReason::Killed => write!(f, "VMM killed ({status})"),
            ExitReason::VmmFailed(err) => write!(f, "VMM failed ({status}): {err}"),
            ExitReason::VsockBackendFailed(err) => write!(f, "vsock device failed: {err}"),
            ExitReason::SharedFsFailed(err) => write!(f, "virtiofsd failed: {err}"),
            ExitReason::StatusUnknown => {
                write!(f, "VMM ended while re-attached; exit status unknown")
            }
        }
    }
}

/// What the supervisor knew when the VMM ended.
#[derive(Debug, Clone, Copy)]
pub struct Circumstances {
    /// Cocoon sent the VMM a signal to end it.
    pub stopped_by_us: bool,
    /// The exit code the VMM uses when a signal ended it (cocoon-vmm: 3; QEMU exits 0).
    pub signal_exit_code: Option<i32>,
}

/// Decides why a VMM ended from its status (`None`: not our child, unknown), the
/// console and its error output.
pub fn classify(
    status: Option<ExitStatus>,
    how: Circumstances,
    console: &str,
    vmm_stderr: &str,
) -> ExitReason {
    if let Some(line) = crate::console::find_panic(console) {
        return ExitReason::KernelPanic(line);
    }
    if how.stopped_by_us {
        return ExitReason::Stopped;
    }
    let Some(status) = status else {
        return ExitReason::StatusUnknown;
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => ExitReason::Shutdown,
        (_, Some(_)) => ExitReason::Killed,
        (code @ Some(_), None) if code == how.signal_exit_code => ExitReason::Killed,
        _ => ExitReason::VmmFailed(crate::console::last_lines(vmm_stderr, 5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_US: Circumstances = Circumstances {
        stopped_by_us: false,
        signal_exit_code: None,
    };
    const US: Circumstances = Circumstances {
        stopped_by_us: true,
        signal_exit_code: None,
    };
    const BUILTIN: Circumstances = Circumstances {
        stopped_by_us: false,
        signal_exit_code: Some(3),
    };

    fn exited(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }
    fn signaled(sig: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(sig))
    }

    #[test]
    fn unknown_status_still_tells_panics_and_our_own_stops() {
        assert_eq!(classify(None, NOT_US, "", ""), ExitReason::StatusUnknown);
        assert_eq!(classify(None, US, "", ""), ExitReason::Stopped);
        let c = "Kernel panic - not syncing: VFS";
        assert!(matches!(
            classify(None, NOT_US, c, ""),
            ExitReason::KernelPanic(_)
        ));
    }

    #[test]
    fn clean_exit_is_shutdown_unless_the_console_shows_a_panic() {
        assert_eq!(classify(exited(0), NOT_US, "bye", ""), ExitReason::Shutdown);
        let c = "Kernel panic - not syncing: Attempted to kill init!";
        assert!(
            matches!(classify(exited(0), NOT_US, c, ""), ExitReason::KernelPanic(l) if l.contains("kill init"))
        );
    }

    #[test]
    fn signals_split_by_who_sent_them() {
        assert_eq!(classify(signaled(9), NOT_US, "", ""), ExitReason::Killed);
        assert_eq!(classify(signaled(9), US, "", ""), ExitReason::Stopped);
        // QEMU exits 0 on SIGTERM: still ours.
        assert_eq!(classify(exited(0), US, "", ""), ExitReason::Stopped);
    }

    #[test]
    fn a_vmm_that_reports_signals_by_exit_code() {
        assert_eq!(classify(exited(3), BUILTIN, "", ""), ExitReason::Killed);
        let us = Circumstances {
            stopped_by_us: true,
            ..BUILTIN
        };
        assert_eq!(classify(exited(3), us, "", ""), ExitReason::Stopped);
        let crash = "ERROR cocoon_vmm: VM exit exit=vCPU 0 crashed: KVM internal error 1\n";
        assert_eq!(
            classify(exited(2), BUILTIN, "", crash),
            ExitReason::VmmFailed(crash.trim_end().into())
        );
        assert_eq!(classify(exited(0), BUILTIN, "", ""), ExitReason::Shutdown);
    }

    #[test]
    fn vmm_errors_carry_its_output() {
        let r = classify(exited(1), NOT_US, "", "qemu-system-x86_64: -m 1: bad\n");
        assert_eq!(
            r,
            ExitReason::VmmFailed("qemu-system-x86_64: -m 1: bad".into())
        );
    }
}

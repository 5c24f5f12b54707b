//! How a VM ends, and the latch every thread uses to report it.
//!
//! The first report wins; it also tells every vCPU thread to stop at its next exit.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote this code to the debug-exit port.
    DebugExit(u8),
    /// The guest asked for a reset; a microVM ends instead of rebooting.
    Reset(ResetCause),
    /// The VMM stopped the VM.
    Stopped,
    /// A vCPU could not continue.
    Crashed { vcpu: u8, cause: CrashCause },
}

/// What asked for the reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// 0xFE written to the i8042 command port (Linux `reboot=k`, the default).
    I8042,
    /// A triple fault (`KVM_EXIT_SHUTDOWN`; Linux `reboot=t`).
    TripleFault,
    /// `KVM_EXIT_SYSTEM_EVENT` (reset or shutdown) from KVM.
    SystemEvent,
}

/// Why a vCPU could not continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashCause {
    /// `KVM_RUN` failed with this errno.
    Run(i32),
    /// `KVM_EXIT_INTERNAL_ERROR` (for example an instruction KVM cannot emulate).
    Internal { suberror: u32, rip: Option<u64> },
    /// `KVM_EXIT_FAIL_ENTRY` with the hardware reason.
    FailEntry(u64),
    /// An exit reason this VMM does not handle.
    UnexpectedExit(&'static str),
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::DebugExit(code) => write!(f, "debug exit with code {code:#x}"),
            VmExit::Reset(cause) => write!(f, "reset ({cause:?})"),
            VmExit::Stopped => f.write_str("stopped by the VMM"),
            VmExit::Crashed { vcpu, cause } => write!(f, "vCPU {vcpu} crashed: {cause}"),
        }
    }
}

impl fmt::Display for CrashCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashCause::Run(errno) => write!(f, "KVM_RUN failed with errno {errno}"),
            CrashCause::Internal { suberror, rip } => {
                // KVM_INTERNAL_ERROR_EMULATION: an instruction KVM could not emulate.
                let what = if *suberror == 1 {
                    " (emulation failure)"
                } else {
                    ""
                };
                write!(f, "KVM internal error {suberror}{what}")?;
                match rip {
                    Some(rip) => write!(f, " at rip {rip:#x}"),
                    None => Ok(()),
                }
            }
            CrashCause::FailEntry(reason) => write!(f, "VM entry failed, reason {reason:#x}"),
            CrashCause::UnexpectedExit(name) => write!(f, "unexpected exit: {name}"),
        }
    }
}

/// The shared, write-once record of how the VM ended.
#[derive(Debug, Default)]
pub struct ExitLatch {
    exit: Mutex<Option<VmExit>>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl ExitLatch {
    /// Records `exit` unless an exit was already recorded; returns whether it was.
    pub fn report(&self, exit: VmExit) -> bool {
        let mut slot = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        self.stopping.store(true, Ordering::SeqCst);
        if slot.is_some() {
            return false;
        }
        tracing::info!(%exit, "VM exit");
        *slot = Some(exit);
        self.changed.notify_all();
        true
    }

    /// Whether vCPUs should stop.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The recorded exit, if any.
    pub fn get(&self) -> Option<VmExit> {
        self.exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for an exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<VmExit> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(exit) = slot.as_ref() {
                return Some(exit.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn crash_causes_read_well() {
        let exit = VmExit::Crashed {
            vcpu: 0,
            cause: CrashCause::Internal {
                suberror: 1,
                rip: Some(0xffff_ffff_8100_0000),
            },
        };
        assert_eq!(
            exit.to_string(),
            "vCPU 0 crashed: KVM internal error 1 (emulation failure) at rip 0xffffffff81000000"
        );
    }

    #[test]
    fn first_report_wins() {
        let latch = ExitLatch::default();
        assert!(!latch.stopping());
        assert!(latch.report(VmExit::DebugExit(7)));
        assert!(!latch.report(VmExit::Stopped));
        assert!(latch.stopping());
        assert_eq!(latch.get(), Some(VmExit::DebugExit(7)));
    }

    #[test]
    fn wait_times_out_then_sees_a_report_from_another_thread() {
        let latch = Arc::new(ExitLatch::default());
        assert_eq!(latch.wait_timeout(Duration::from_millis(10)), None);
        let l2 = latch.clone();
        let t = std::thread::spawn(move || l2.report(VmExit::Reset(ResetCause::I8042)));
        assert_eq!(
            latch.wait_timeout(Duration::from_secs(10)),
            Some(VmExit::Reset(ResetCause::I8042))
        );
        t.join().unwrap();
    }
}

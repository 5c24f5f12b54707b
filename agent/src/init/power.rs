//! Ending the guest: stop every process, sync, restart the machine.
//!
//! The VMM is started with `reboot=t` on the kernel command line and told not to reboot
//! (QEMU `-no-reboot`), so a restart is how a guest exits cleanly on every backend —
//! power-off would need ACPI, which the minimal machine does not have.

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};
use std::time::Duration;

/// Terminates all other processes, syncs and restarts the machine. Only for PID 1.
pub fn power_off() -> ! {
    tracing::info!("powering off");
    let everyone = Pid::from_raw(-1);
    let _ = kill(everyone, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let _ = kill(everyone, Signal::SIGKILL);
    sync();
    let err = reboot(RebootMode::RB_AUTOBOOT);
    // reboot() returns only on failure; nothing is left to do but say so. PID 1 exiting
    // makes the kernel panic, which the host reports with the console.
    tracing::error!("reboot failed: {err:?}");
    std::process::exit(1);
}

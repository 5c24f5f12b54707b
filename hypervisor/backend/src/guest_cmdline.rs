//! The guest kernel's command line, the same for every backend.

use crate::accel::Accel;

/// Serial console; restart = exit (`reboot=t` restarts by triple fault, which QEMU with
/// `-no-reboot` and cocoon-vmm turn into the VMM's exit); no reboot delay after a panic;
/// then per-accel timekeeping, then the user's arguments.
pub fn kernel_cmdline(accel: Accel, tsc_khz: Option<u64>, extra: &[String]) -> String {
    let mut args = vec![
        "console=ttyS0".to_string(),
        "reboot=t".into(),
        "panic=-1".into(),
        "quiet".into(),
    ];
    if accel == Accel::Tcg {
        // microvm under TCG hangs at random calibrating the TSC without these.
        if let Some(khz) = tsc_khz {
            args.push(format!("tsc_early_khz={khz}"));
        }
        args.push("tsc=reliable".into());
    }
    args.extend(extra.iter().cloned());
    args.join(" ")
}

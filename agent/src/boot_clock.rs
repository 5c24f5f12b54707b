//! Time since the kernel started (CLOCK_BOOTTIME), the clock of the boot timings.

use nix::time::{clock_gettime, ClockId};

/// Nanoseconds since the kernel started.
pub fn since_boot_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// Boot milestones the agent records for GetGuestDetails.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootMarks {
    pub started_ns: u64,
    pub ready_ns: u64,
}

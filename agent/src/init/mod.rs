//! PID 1 duties in the guest: filesystems, kernel modules, reaping, power off.
//!
//! Nothing here runs when the agent is a host process.

pub mod modules;
pub mod mounts;
pub mod power;
pub mod reaper;

use std::path::Path;

/// The list of kernel modules an image ships, absolute paths in load order.
pub const MODULES_LIST: &str = "/etc/cocoon/modules.list";

/// What guest setup did, for logs and GetGuestDetails.
#[derive(Debug, Default, Clone)]
pub struct SetupReport {
    pub modules_loaded: Vec<String>,
}

/// Prepares the guest as PID 1: mounts the API filesystems, then loads the modules the
/// image lists. Failures of single steps are logged, not fatal: the host learns about a
/// broken guest through the agent's answers and the console.
pub fn setup_guest() -> SetupReport {
    for failure in mounts::mount_all(mounts::GUEST_MOUNTS) {
        tracing::warn!("{failure}");
    }
    // PATH for anything the agent execs later; PID 1 starts with an empty environment.
    std::env::set_var(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let modules_loaded = modules::load_listed(Path::new(MODULES_LIST));
    SetupReport { modules_loaded }
}

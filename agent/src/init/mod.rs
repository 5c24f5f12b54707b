//! PID 1 duties in the guest: filesystems, kernel modules, reaping, power off.
//!
//! Nothing here runs when the agent is a host process.

pub mod modules;
pub mod mounts;
pub mod power;
pub mod reaper;
pub mod root;

use std::path::Path;

/// The list of kernel modules an image ships, absolute paths in load order.
pub const MODULES_LIST: &str = "/etc/cocoon/modules.list";

/// What guest setup did, for logs and GetGuestDetails.
#[derive(Debug, Default, Clone)]
pub struct SetupReport {
    pub modules_loaded: Vec<String>,
}

/// Prepares the agent as a host process (tests): a child subreaper, so container
/// processes become its children as they would of PID 1; and a mount namespace of its
/// own (private from the host's), so overlays and tmpfs mounts it makes vanish with it
/// even if it is killed. Must run before any thread starts.
pub fn setup_host_process() {
    if let Err(e) = crate::sys::set_child_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let private = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).and_then(|()| {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        )
    });
    if let Err(e) = private {
        tracing::warn!("no mount namespace of its own: {e}; mounts are made on the host");
    }
}

/// Prepares the guest as PID 1: mounts the API filesystems, then loads the modules the
/// image lists. Failures of single steps are logged, not fatal: the host learns about a
/// broken guest through the agent's answers and the console.
pub fn setup_guest() -> SetupReport {
    if let Err(e) = root::leave_rootfs() {
        tracing::warn!("cannot leave the initramfs root (containers will not start): {e}");
    }
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

//! Shared helpers of Cocoon's end-to-end tests: real guest VMs, no fakes.
//!
//! The guest image comes from `guest-image/build.sh` (the test script builds it first);
//! binaries (`cocoon-vsock`, `cocoon-vmm`, `cocoon`) from `cargo build --bins` of this
//! workspace. [`scenario`] holds the end-to-end scenarios every backend runs.

pub mod scenario;

pub mod containers;

pub mod registry;

pub mod host_mounts;

pub mod cri;

use cocoon_hypervisor::config::ValidVmConfig;
use cocoon_hypervisor::VmConfig;
use cocoon_runtime::guest_image::{self, GuestImage};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Boot + agent under TCG takes seconds; leave room for a loaded 2-core machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest image, or a panic saying how to build it.
pub fn guest_image() -> GuestImage {
    GuestImage::locate().unwrap_or_else(|e| panic!("{e}"))
}

/// A scratch directory for one test's VMs, removed at the end.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cocoon-e2e-")
        .tempdir_in("/tmp")
        .expect("create scratch dir")
}

/// A VM config on the built guest image with its run dir under `scratch`.
pub fn vm_config(scratch: &Path, name: &str) -> VmConfig {
    let image = guest_image();
    let mut c = VmConfig::new(image.kernel, image.initrd, scratch.join(name));
    c.vsock_backend = guest_image::vsock_backend();
    c
}

pub fn validate(c: &VmConfig) -> ValidVmConfig {
    c.validate().unwrap_or_else(|e| panic!("config: {e}"))
}

/// Pids of live processes whose command line mentions `needle` (shared with cocoond's
/// recovery).
pub use cocoon_runtime::procs::processes_mentioning;

/// Asserts a VM left nothing behind: no process mentions its run dir, the dir is gone.
pub fn assert_nothing_left(run_dir: &Path) {
    let procs = processes_mentioning(run_dir);
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    assert!(
        !run_dir.exists(),
        "run dir left behind: {}",
        run_dir.display()
    );
}

/// Where cargo put this workspace's binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

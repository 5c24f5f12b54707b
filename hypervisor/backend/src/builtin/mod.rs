//! The builtin backend: `cocoon-vmm`, Cocoon's own KVM VMM — one process per VM with
//! the vsock device inside it (no vhost-user, no second process, private guest RAM).
//! A shared filesystem adds virtiofsd beside it, as on the QEMU backend: cocoon-vmm
//! is its vhost-user frontend (guest RAM is then a memfd both map).
//!
//! The process is started with its control API only (`--api-sock`, plus `--metrics`);
//! the VM is then configured and started over that API ([`api_client`]) with
//! cocoon-vmm's own [`cocoon_vmm::VmConfig`], built here by [`vmm_config`].

pub mod api_client;

use crate::accel::Accel;
use crate::config::ValidVmConfig;
use crate::guest_cmdline::kernel_cmdline;
use api_client::{ApiClient, ApiError};
use cocoon_vmm::{BootSource, SerialOutput, SharedFsSpec, VsockSpec};
use std::ffi::OsString;
use std::path::PathBuf;

/// What `cocoon-vmm` exits with when SIGTERM, SIGINT or SIGHUP ended the VM.
pub const EXIT_SIGNALLED: i32 = 3;
/// What `cocoon-vmm` exits with when a vCPU crashed.
pub const EXIT_CRASHED: i32 = 2;

/// Files the VMM process is pointed at.
#[derive(Debug, Clone)]
pub struct BuiltinPaths {
    pub console_log: PathBuf,
    pub vsock_socket: PathBuf,
    /// Where cocoon-vmm keeps its metrics (boot time, exits, device counters) as JSON.
    pub metrics: PathBuf,
    /// cocoon-vmm's control API socket.
    pub api_socket: PathBuf,
    /// virtiofsd's vhost-user socket (a config with a shared filesystem).
    pub virtiofs_socket: PathBuf,
}

/// `cocoon-vmm`'s arguments: its API socket and metrics file; the VM itself comes
/// over the API ([`vmm_config`]).
pub fn vmm_args(paths: &BuiltinPaths) -> Vec<OsString> {
    vec![
        "--api-sock".into(),
        paths.api_socket.clone().into(),
        "--metrics".into(),
        paths.metrics.clone().into(),
    ]
}

/// The VM of `cfg` as cocoon-vmm builds it. cocoon-vmm appends the
/// `virtio_mmio.device=` entries to the kernel command line itself.
pub fn vmm_config(cfg: &ValidVmConfig, paths: &BuiltinPaths) -> cocoon_vmm::VmConfig {
    let c = &cfg.config;
    cocoon_vmm::VmConfig {
        // Validation bounds it by BUILTIN_MAX_VCPUS; anything larger is refused by
        // cocoon-vmm's own validation rather than truncated here.
        vcpus: u8::try_from(c.vcpus).unwrap_or(u8::MAX),
        memory_mib: c.memory_mib,
        boot: BootSource::Kernel {
            path: c.kernel.clone(),
            cmdline: kernel_cmdline(Accel::Kvm, None, &c.kernel_args),
            initrd: Some(c.initrd.clone()),
        },
        serial: SerialOutput::File(paths.console_log.clone()),
        debug_exit: false,
        entropy: false,
        vsock: Some(VsockSpec {
            guest_cid: u64::from(c.guest_cid),
            uds_path: paths.vsock_socket.clone(),
        }),
        drives: Vec::new(),
        nets: Vec::new(),
        shared_fs: c
            .shared_fs
            .iter()
            .map(|fs| SharedFsSpec {
                socket_path: paths.virtiofs_socket.clone(),
                tag: fs.tag.clone(),
            })
            .collect(),
    }
}

/// Configures and starts the VM over the API; once this returns the VM runs (its
/// vsock socket exists) and the guest is booting.
pub async fn configure_and_start(
    api: &ApiClient,
    config: &cocoon_vmm::VmConfig,
) -> Result<(), ApiError> {
    api.put_config(config).await?;
    api.start().await
}

#[cfg(test)]
mod tests;

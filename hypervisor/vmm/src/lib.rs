//! cocoon-vmm: Cocoon's builtin KVM micro-VMM.
//!
//! One process per VM, one thread per vCPU, no async. The guest is hostile: every
//! port, MMIO and virtqueue access is checked before a device acts on it.
//!
//! - [`vstate`]: the KVM VM, guest memory, vCPUs and their threads;
//! - [`arch::x86_64`]: address layout, boot CPU state, GDT, page tables, MP table,
//!   CPUID and MSRs;
//! - [`boot`]: PVH vmlinux and raw test code;
//! - [`devices`]: the port and MMIO buses, legacy devices, virtio-mmio and its devices;
//! - [`vmm`]: putting it together: [`Vmm::start`], [`Vmm::wait_timeout`], [`Vmm::pause`],
//!   [`Vmm::resume`], [`Vmm::stop`];
//! - [`api`]: the control API (HTTP/1.1 over a unix socket) and the [`api::VmSlot`] it
//!   shares with the thread that owns the VM;
//! - [`seccomp`]: a seccomp filter per kind of thread, each thread installing its own.

pub mod api;
pub mod arch;
pub mod boot;
mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod host;
pub mod metrics;
pub mod seccomp;
mod stoppable;
pub mod vmm;
pub mod vstate;

pub use boot::BootSource;
pub use config::{DriveSpec, NetSpec, SerialOutput, SharedFsSpec, VmConfig, VsockSpec};
pub use exit::{CrashCause, ResetCause, VmExit};
pub use metrics::MetricsSource;
pub use vmm::{DeviceInfo, PauseError, Stopper, VmStats, Vmm};

use std::path::PathBuf;

/// Errors while building or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration")]
    Config(#[from] config::ConfigError),
    #[error("installing the vCPU kick handler")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    #[error("guest memory")]
    Memory(#[from] vstate::memory::MemoryError),
    #[error("VM")]
    Vm(#[from] vstate::vm::VmError),
    #[error("vCPU")]
    Vcpu(#[from] vstate::vcpu::VcpuError),
    #[error("creating an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("opening serial log {path}")]
    SerialLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the entropy source")]
    Entropy(#[source] std::io::Error),
    #[error("vsock device")]
    Vsock(#[from] devices::virtio::vsock::VsockError),
    #[error("block device")]
    Block(#[from] devices::virtio::block::BlockError),
    #[error("virtio-fs device")]
    Fs(#[from] devices::virtio::fs::FsError),
    #[error("net device")]
    Net(#[from] devices::virtio::net::NetError),
    #[error("placing a device")]
    Bus(#[from] devices::BusError),
    #[error("virtio queue setup")]
    Queue(#[from] devices::virtio::queue::QueueError),
    #[error("MP table")]
    Mptable(#[from] arch::x86_64::mptable::MptableError),
    #[error("boot")]
    Boot(#[from] boot::BootError),
}

//! Cocoon's VM backends, behind one interface the runtime drives.
//!
//! A [`VmConfig`] is validated before anything starts ([`config`]); [`Vm::start`]
//! launches the VMM process(es) of the configured backend and supervises them: exit
//! status and crash detection ([`exit`]), the guest console ([`console`]), graceful and
//! forced stop. Host ↔ guest traffic goes through the hybrid vsock unix socket
//! ([`hybrid_vsock`]).
//!
//! Backends ([`Backend`]): QEMU ([`qemu`]) with our vhost-user vsock device
//! (`cocoon-vsock`) in a second process and, for a pod's shared filesystem, `virtiofsd`
//! in a third ([`virtiofs`]); and the builtin KVM VMM ([`builtin`], `cocoon-vmm`) with
//! the same vsock device inside it.
//!
//! A runtime that restarts takes its VMs back: [`Vm::record`] describes a running VM
//! ([`VmRecord`]: processes by pid and start time), [`Vm::detach`] lets it run on, and
//! [`Vm::reattach`] supervises it again through pidfds.

pub mod accel;
pub mod builtin;
pub mod config;
pub mod console;
pub mod exit;
pub mod guest_cmdline;
pub mod hybrid_vsock;
mod launch;
mod pidfd;
mod process;
pub mod qemu;
pub mod record;
mod supervisor;
pub mod virtiofs;
mod vm;

pub use accel::{Accel, AccelChoice};
pub use config::{Backend, ConfigError, Programs, VmConfig};
pub use exit::{ExitReason, VmExit};
pub use process::Role;
pub use record::{ProcessRecord, ReattachError, VmRecord};
pub use virtiofs::SharedFsConfig;
pub use vm::{Vm, VmError, CONSOLE_TAIL_LINES};

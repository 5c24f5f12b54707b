//! Cocoon's VM backends, behind one interface the runtime drives.
//!
//! A [`VmConfig`] is validated before anything starts ([`config`]); [`Vm::start`]
//! launches the VMM process(es) of the configured backend and supervises them: exit
//! status and crash detection ([`exit`]), the guest console ([`console`]), graceful and
//! forced stop. Host ↔ guest traffic goes through the hybrid vsock unix socket
//! ([`hybrid_vsock`]).
//!
//! Backends ([`Backend`]): QEMU ([`qemu`]) with our vhost-user vsock device
//! (`cocoon-vsock`) in a second process, and the builtin KVM VMM ([`builtin`],
//! `cocoon-vmm`) with the same vsock device inside it.

pub mod accel;
pub mod builtin;
pub mod config;
pub mod console;
pub mod exit;
pub mod guest_cmdline;
pub mod hybrid_vsock;
mod launch;
mod process;
pub mod qemu;
mod supervisor;
mod vm;

pub use accel::{Accel, AccelChoice};
pub use config::{Backend, ConfigError, Programs, VmConfig};
pub use exit::{ExitReason, VmExit};
pub use vm::{Vm, VmError, CONSOLE_TAIL_LINES};

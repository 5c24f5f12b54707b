//! Cocoon's VM backends, behind one interface the runtime drives.
//!
//! A [`VmConfig`] is validated before anything starts ([`config`]); [`Vm::start`]
//! launches the VMM process(es) of the configured backend and supervises them: exit
//! status and crash detection ([`exit`]), the guest console ([`console`]), graceful and
//! forced stop. Host ↔ guest traffic goes through the hybrid vsock unix socket
//! ([`hybrid_vsock`]).
//!
//! Backends: QEMU ([`qemu`]) with our vhost-user vsock device (`cocoon-vsock`). The
//! builtin KVM VMM joins as a second [`Backend`] variant.

pub mod accel;
pub mod config;
pub mod console;
pub mod exit;
pub mod hybrid_vsock;
mod process;
pub mod qemu;
mod vm;

pub use accel::{Accel, AccelChoice};
pub use config::{Backend, ConfigError, VmConfig};
pub use exit::{ExitReason, VmExit};
pub use vm::{Vm, VmError, CONSOLE_TAIL_LINES};

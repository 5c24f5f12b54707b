//! The QEMU backend: Debian's qemu-system-x86_64 on the `microvm` machine, guest RAM in a
//! shared memfd so our vhost-user vsock device (`cocoon-vsock`) can reach the queues.

mod cmdline;

pub use crate::guest_cmdline::kernel_cmdline;
pub use cmdline::{host_tsc_khz, qemu_args, QemuPaths};

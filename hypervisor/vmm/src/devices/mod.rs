//! Emulated devices and the buses that route guest port and MMIO accesses to them.

pub mod bus;
pub(crate) mod epoll_loop;
pub mod legacy;
pub mod thread;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};

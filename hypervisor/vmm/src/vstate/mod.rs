//! KVM state: the VM (irqchip, PIT, memory slots), guest memory, and vCPUs.

pub mod kick;
pub mod memory;
pub mod vcpu;
pub mod vm;

//! KVM state: the VM (irqchip, PIT, memory slots), guest memory, and vCPUs (and the
//! gate they park at while paused).

pub mod kick;
pub mod memory;
pub mod pause;
pub mod vcpu;
pub mod vm;

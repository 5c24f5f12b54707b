//! The ioctl request numbers the filters allow, built the way `<linux/kvm.h>`,
//! `<linux/if_tun.h>` and `<asm-generic/ioctls.h>` build them (x86_64).

use std::mem::size_of;

use kvm_bindings::{
    kvm_cpuid2, kvm_fpu, kvm_ioeventfd, kvm_irqfd, kvm_lapic_state, kvm_msrs, kvm_pit_config,
    kvm_regs, kvm_sregs, kvm_userspace_memory_region, KVMIO,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

/// An ioctl request number: the low 32 bits are what the kernel (and the filters)
/// compare.
pub type Request = u32;

const fn io(ty: u32, nr: u32) -> Request {
    ioctl_expr(_IOC_NONE, ty, nr, 0) as Request
}

const fn ior(ty: u32, nr: u32, size: usize) -> Request {
    ioctl_expr(_IOC_READ, ty, nr, size as u32) as Request
}

const fn iow(ty: u32, nr: u32, size: usize) -> Request {
    ioctl_expr(_IOC_WRITE, ty, nr, size as u32) as Request
}

const fn iowr(ty: u32, nr: u32, size: usize) -> Request {
    ioctl_expr(_IOC_READ | _IOC_WRITE, ty, nr, size as u32) as Request
}

// On the /dev/kvm fd.
pub const KVM_CREATE_VM: Request = io(KVMIO, 0x01);
pub const KVM_CHECK_EXTENSION: Request = io(KVMIO, 0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: Request = io(KVMIO, 0x04);
pub const KVM_GET_SUPPORTED_CPUID: Request = iowr(KVMIO, 0x05, size_of::<kvm_cpuid2>());

// On the VM fd.
pub const KVM_CREATE_VCPU: Request = io(KVMIO, 0x41);
pub const KVM_SET_USER_MEMORY_REGION: Request =
    iow(KVMIO, 0x46, size_of::<kvm_userspace_memory_region>());
pub const KVM_SET_TSS_ADDR: Request = io(KVMIO, 0x47);
pub const KVM_CREATE_IRQCHIP: Request = io(KVMIO, 0x60);
pub const KVM_IRQFD: Request = iow(KVMIO, 0x76, size_of::<kvm_irqfd>());
pub const KVM_CREATE_PIT2: Request = iow(KVMIO, 0x77, size_of::<kvm_pit_config>());
pub const KVM_IOEVENTFD: Request = iow(KVMIO, 0x79, size_of::<kvm_ioeventfd>());

// On a vCPU fd.
pub const KVM_RUN: Request = io(KVMIO, 0x80);
pub const KVM_GET_REGS: Request = ior(KVMIO, 0x81, size_of::<kvm_regs>());
pub const KVM_SET_REGS: Request = iow(KVMIO, 0x82, size_of::<kvm_regs>());
pub const KVM_GET_SREGS: Request = ior(KVMIO, 0x83, size_of::<kvm_sregs>());
pub const KVM_SET_SREGS: Request = iow(KVMIO, 0x84, size_of::<kvm_sregs>());
pub const KVM_SET_MSRS: Request = iow(KVMIO, 0x89, size_of::<kvm_msrs>());
pub const KVM_SET_FPU: Request = iow(KVMIO, 0x8d, size_of::<kvm_fpu>());
pub const KVM_GET_LAPIC: Request = ior(KVMIO, 0x8e, size_of::<kvm_lapic_state>());
pub const KVM_SET_LAPIC: Request = iow(KVMIO, 0x8f, size_of::<kvm_lapic_state>());
pub const KVM_SET_CPUID2: Request = iow(KVMIO, 0x90, size_of::<kvm_cpuid2>());

/// `'T'`: the tun driver's ioctl type.
const TUN: u32 = b'T' as u32;
const INT: usize = size_of::<libc::c_int>();
pub const TUNSETIFF: Request = iow(TUN, 202, INT);
pub const TUNGETFEATURES: Request = ior(TUN, 207, INT);
pub const TUNSETOFFLOAD: Request = iow(TUN, 208, INT);
pub const TUNGETIFF: Request = ior(TUN, 210, INT);
pub const TUNSETVNETHDRSZ: Request = iow(TUN, 216, INT);

/// Sets or clears `O_NONBLOCK` (Rust's `set_nonblocking` on sockets uses it).
pub const FIONBIO: Request = libc::FIONBIO as Request;

#[cfg(test)]
mod tests {
    use super::*;

    /// The values `<linux/kvm.h>` and `<linux/if_tun.h>` give (printed by a C program
    /// built against this host's kernel headers).
    #[test]
    fn requests_match_the_kernel_headers() {
        let expected: [(Request, Request); 26] = [
            (KVM_CREATE_VM, 0xae01),
            (KVM_CHECK_EXTENSION, 0xae03),
            (KVM_GET_VCPU_MMAP_SIZE, 0xae04),
            (KVM_GET_SUPPORTED_CPUID, 0xc008_ae05),
            (KVM_CREATE_VCPU, 0xae41),
            (KVM_SET_USER_MEMORY_REGION, 0x4020_ae46),
            (KVM_SET_TSS_ADDR, 0xae47),
            (KVM_CREATE_IRQCHIP, 0xae60),
            (KVM_IRQFD, 0x4020_ae76),
            (KVM_CREATE_PIT2, 0x4040_ae77),
            (KVM_IOEVENTFD, 0x4040_ae79),
            (KVM_RUN, 0xae80),
            (KVM_GET_REGS, 0x8090_ae81),
            (KVM_SET_REGS, 0x4090_ae82),
            (KVM_GET_SREGS, 0x8138_ae83),
            (KVM_SET_SREGS, 0x4138_ae84),
            (KVM_SET_MSRS, 0x4008_ae89),
            (KVM_SET_FPU, 0x41a0_ae8d),
            (KVM_GET_LAPIC, 0x8400_ae8e),
            (KVM_SET_LAPIC, 0x4400_ae8f),
            (KVM_SET_CPUID2, 0x4008_ae90),
            (TUNSETIFF, 0x4004_54ca),
            (TUNGETFEATURES, 0x8004_54cf),
            (TUNSETOFFLOAD, 0x4004_54d0),
            (TUNGETIFF, 0x8004_54d2),
            (TUNSETVNETHDRSZ, 0x4004_54d8),
        ];
        for (i, (got, want)) in expected.into_iter().enumerate() {
            assert_eq!(got, want, "entry {i}: {got:#x} != {want:#x}");
        }
        assert_eq!(FIONBIO, 0x5421);
    }
}

//! The MSRs a vCPU boots with: syscall/sysenter state cleared, the TSC at zero and
//! fast string operations enabled.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Errors while setting MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    #[error("building the MSR list")]
    Build(#[source] vmm_sys_util::fam::Error),
    #[error("KVM_SET_MSRS")]
    Set(#[source] kvm_ioctls::Error),
    #[error("KVM refused MSR {0:#x}")]
    Refused(u32),
}

/// The boot MSR values, as (index, value).
pub fn boot_msrs() -> [(u32, u64); 10] {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

/// Sets [`boot_msrs`] on `vcpu`.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    let values = boot_msrs();
    let entries: Vec<kvm_msr_entry> = values
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(MsrError::Build)?;
    let set = vcpu.set_msrs(&msrs).map_err(MsrError::Set)?;
    // KVM stops at the first MSR it refuses and returns how many it set.
    match values.get(set) {
        Some(&(index, _)) => Err(MsrError::Refused(index)),
        None => Ok(()),
    }
}

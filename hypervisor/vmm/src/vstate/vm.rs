//! The KVM VM: in-kernel irqchip (PIC + IOAPIC + LAPICs), PIT, and guest memory slots.

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_START;

/// Capabilities the VMM cannot work without.
const REQUIRED_CAPS: [(Cap, &str); 6] = [
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

/// Errors while creating or configuring the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("opening /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM lacks {0}")]
    MissingCap(&'static str),
    #[error("KVM_CREATE_VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR")]
    SetTss(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP")]
    CreateIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2")]
    CreatePit(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION for slot {slot}")]
    SetMemory {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_GET_SUPPORTED_CPUID")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU {0}")]
    CreateVcpu(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_IRQFD for GSI {0}")]
    Irqfd(u32, #[source] kvm_ioctls::Error),
    #[error("KVM_IOEVENTFD at {0:#x}")]
    Ioeventfd(u64, #[source] kvm_ioctls::Error),
}

/// A KVM VM with its guest memory registered.
///
/// Field order matters: the VM fd is dropped before the memory it maps.
pub struct Vm {
    fd: VmFd,
    kvm: Kvm,
    memory: GuestMemoryMmap,
}

impl Vm {
    /// Creates the VM, registers `memory` and creates the in-kernel irqchip (what
    /// vCPUs need to be created). The PIT comes next ([`Vm::create_pit`]), possibly
    /// while vCPUs are being created on another thread.
    ///
    /// Memory goes first: a memory slot added before the irqchip and the vCPUs exist
    /// is quick (0.1 ms on this project's nested KVM), one added after them took
    /// 4–6 ms there.
    pub fn new(memory: GuestMemoryMmap) -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(KVM_TSS_START as usize)
            .map_err(VmError::SetTss)?;
        let vm = Vm { fd, kvm, memory };
        vm.register_memory()?;
        vm.fd.create_irq_chip().map_err(VmError::CreateIrqchip)?;
        Ok(vm)
    }

    /// Creates the in-kernel PIT (its speaker port a dummy).
    pub fn create_pit(&self) -> Result<(), VmError> {
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(VmError::CreatePit)
    }

    /// Registers guest memory with KVM, one slot per region.
    fn register_memory(&self) -> Result<(), VmError> {
        for (slot, region) in self.memory.iter().enumerate() {
            let slot = slot as u32;
            let region_desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the host range is a live mapping of exactly `memory_size` bytes owned
            // by `self.memory`; `Vm` drops its VM fd before that memory, and every vCPU
            // thread holds its own clone of the mapping for as long as it can run.
            unsafe { self.fd.set_user_memory_region(region_desc) }
                .map_err(|source| VmError::SetMemory { slot, source })?;
        }
        Ok(())
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The KVM VM fd.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The CPUID KVM can offer on this host.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::SupportedCpuid)
    }

    /// Creates vCPU `index` (its APIC id).
    pub fn create_vcpu(&self, index: u8) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(u64::from(index))
            .map_err(|e| VmError::CreateVcpu(index, e))
    }

    /// Has KVM signal `evt` on any write to the MMIO address `addr`, instead of
    /// exiting to the VMM.
    pub fn register_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| VmError::Ioeventfd(addr, e))
    }

    /// Has KVM signal `evt` on 32-bit writes of `value` to the MMIO address `addr`
    /// (a virtio-mmio QueueNotify register and one queue index, say), instead of
    /// exiting to the VMM. Other values still exit.
    pub fn register_ioevent_datamatch(
        &self,
        evt: &EventFd,
        addr: u64,
        value: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), value)
            .map_err(|e| VmError::Ioeventfd(addr, e))
    }

    /// Routes writes to `evt` to interrupt line `gsi` (edge).
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|e| VmError::Irqfd(gsi, e))
    }
}

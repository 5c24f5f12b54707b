//! Boot-time vCPU state: general registers, segments and control registers, FPU, the
//! local APIC's LINT pins, and the boot GDT and identity page tables in guest memory.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::boot_gdt;
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_COUNT, PDE_START, PDPTE_START,
    PML4_START,
};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page-table entry bits: present, writable, and (in a page directory) 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_LARGE: u64 = 0x80;

/// Local APIC register offsets and delivery modes for the LINT pins.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0b100;
const APIC_MODE_EXTINT: u32 = 0b111;

/// Errors while setting up a vCPU's registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("writing boot tables to guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    #[error("KVM_GET_SREGS")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS")]
    SetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS")]
    SetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_FPU")]
    SetFpu(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_LAPIC")]
    GetLapic(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_LAPIC")]
    SetLapic(#[source] kvm_ioctls::Error),
}

/// The CPU mode a vCPU starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// 64-bit long mode with the first 4 GiB identity-mapped.
    Long,
    /// 32-bit protected mode, paging off (the PVH entry state).
    Protected,
}

/// Where and how a vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    pub mode: CpuMode,
    pub rip: u64,
    /// Loaded into RSI (the Linux 64-bit boot protocol's zero page pointer).
    pub rsi: u64,
    /// Loaded into RBX (the PVH `hvm_start_info` pointer).
    pub rbx: u64,
}

/// Writes the boot GDT, the empty IDT and, for long mode, identity page tables for
/// the first 4 GiB (2 MiB pages) into guest memory.
pub fn write_boot_tables(mem: &GuestMemoryMmap, mode: CpuMode) -> Result<(), RegsError> {
    let gdt = boot_gdt(mode == CpuMode::Long);
    for (i, d) in gdt.iter().enumerate() {
        let addr = GuestAddress(BOOT_GDT_START + 8 * i as u64);
        mem.write_obj(d.encode(), addr).map_err(RegsError::Memory)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(RegsError::Memory)?;
    if mode == CpuMode::Long {
        write_page_tables(mem)?;
    }
    Ok(())
}

fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let w = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(RegsError::Memory)
    };
    w(PDPTE_START | PTE_PRESENT_RW, PML4_START)?;
    for gib in 0..PDE_COUNT {
        let pd = PDE_START + gib * 0x1000;
        w(pd | PTE_PRESENT_RW, PDPTE_START + gib * 8)?;
        for i in 0..512u64 {
            let page = ((gib << 30) | (i << 21)) | PTE_PRESENT_RW | PDE_LARGE;
            w(page, pd + i * 8)?;
        }
    }
    Ok(())
}

/// Sets segments, descriptor tables and control registers for `mode`.
pub fn setup_sregs(vcpu: &VcpuFd, mode: CpuMode) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(RegsError::GetSregs)?;
    let [_, code, data, tss] = boot_gdt(mode == CpuMode::Long);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (4 * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code.segment(1);
    let ds = data.segment(2);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ds, ds, ds, ds, ds);
    sregs.tr = tss.segment(3);
    match mode {
        CpuMode::Long => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        CpuMode::Protected => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    vcpu.set_sregs(&sregs).map_err(RegsError::SetSregs)
}

/// Sets the general registers: RIP, the boot stack, RSI/RBX, and RFLAGS with only
/// the reserved bit 1 set (interrupts off).
pub fn setup_regs(vcpu: &VcpuFd, entry: &EntryState) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.rip,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: entry.rsi,
        rbx: entry.rbx,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(RegsError::SetRegs)
}

/// Sets the x87 control word and MXCSR to their power-on defaults.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(RegsError::SetFpu)
}

/// Wires LINT0 as ExtINT (the 8259 PIC's output) and LINT1 as NMI, as firmware would.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(RegsError::GetLapic)?;
    set_lvt_mode(&mut lapic, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic, APIC_LVT_LINT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(RegsError::SetLapic)
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, offset: usize, mode: u32) {
    let reg = &mut lapic.regs[offset..offset + 4];
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(reg.iter()) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (r, b) in reg.iter_mut().zip(value.to_le_bytes()) {
        *r = b as libc::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_keeps_other_bits() {
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[APIC_LVT_LINT0 + 2] = 1; // bit 16: masked
        set_lvt_mode(&mut lapic, APIC_LVT_LINT0, APIC_MODE_EXTINT);
        assert_eq!(lapic.regs[APIC_LVT_LINT0 + 1], 0x7);
        assert_eq!(lapic.regs[APIC_LVT_LINT0 + 2], 1);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&mem, CpuMode::Long).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPTE_START);
        let pdpte3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 24)).unwrap();
        assert_eq!(pdpte3 & !0xfff, PDE_START + 3 * 0x1000);
        // 0xd000_0000 is in GiB 3, entry 128.
        let pde: u64 = mem
            .read_obj(GuestAddress(PDE_START + 3 * 0x1000 + 128 * 8))
            .unwrap();
        assert_eq!(pde & !0xfff, 0xd000_0000);
        assert_eq!(pde & 0x83, 0x83);
    }
}

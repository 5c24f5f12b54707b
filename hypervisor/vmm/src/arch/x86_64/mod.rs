//! x86_64: the guest physical layout, the boot-time CPU state and the tables the
//! guest kernel reads at boot (GDT, page tables, MP table, CPUID, MSRs).

pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

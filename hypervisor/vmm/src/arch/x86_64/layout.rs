//! The guest physical address map.
//!
//! ```text
//! 0x0000_0500  boot GDT                 0x0000_8ff0  boot stack top
//! 0x0000_0520  boot IDT (empty)         0x0000_9000  PML4
//! 0x0000_6000  PVH hvm_start_info       0x0000_a000  PDPT
//! 0x0000_6040  PVH module list (initrd) 0x0000_b000  4 page directories (4 GiB, 2 MiB pages)
//! 0x0000_6100  PVH memory map           0x0002_0000  kernel command line
//! 0x0000_7000  zero page (boot_params)  0x0009_fc00  MP table (start of the EBDA)
//! 0x0010_0000  kernel (high memory)     top of RAM below 3 GiB: initrd (page aligned)
//! 0xc000_0000 .. 0x1_0000_0000  MMIO gap: virtio-mmio devices, IOAPIC, LAPIC, TSS
//! ```
//! RAM above 3 GiB continues at 4 GiB.

/// Boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (a single null entry).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list: one entry, the initrd.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map entries (up to the zero page).
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux zero page (`boot_params`) for the 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of [`PDE_COUNT`] page directories.
pub const PDE_START: u64 = 0xb000;
/// Page directories: one per identity-mapped GiB.
pub const PDE_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line, with its NUL (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives in its first KiB, where
/// Linux scans for it.
pub const EBDA_START: u64 = 0x9fc00;
/// Size of the region Linux scans at [`EBDA_START`].
pub const EBDA_SCAN_SIZE: u64 = 0x400;
/// Start of high memory: kernels load at or above this address.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (exclusive).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First GSI handed to virtio-mmio devices (0-4 are legacy: PIT, keyboard, cascade, COM2, COM1).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last usable IOAPIC pin.
pub const IRQ_MAX: u32 = 23;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// Three pages KVM needs for the real-mode TSS on Intel.
pub const KVM_TSS_START: u64 = 0xfffb_d000;

// The boot structures do not overlap one another (checked at compile time).
const _: () = {
    assert!(BOOT_IDT_START >= BOOT_GDT_START + 4 * 8);
    assert!(PVH_MODLIST_START >= PVH_INFO_START + 56);
    assert!(PVH_MEMMAP_START >= PVH_MODLIST_START + 32);
    assert!(ZERO_PAGE_START > PVH_MEMMAP_START);
    assert!(PDE_START + PDE_COUNT * 0x1000 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(VIRTIO_MMIO_BASE >= MMIO_GAP_START && APIC_START < MMIO_GAP_END);
};

/// The RAM ranges for `mem_size` bytes of guest memory: one below the MMIO gap and,
/// if there is more, one from 4 GiB up.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_ranges_split_around_the_gap() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(0, MMIO_GAP_START), (MMIO_GAP_END, 1 << 30)]
        );
    }
}

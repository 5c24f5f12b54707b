//! The PVH boot ABI's `hvm_start_info` and memory map (e820-style).

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap,
    GuestMemoryRegion,
};

use crate::arch::x86_64::layout::{
    CMDLINE_START, EBDA_START, HIMEM_START, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START,
    ZERO_PAGE_START,
};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// e820 types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The memory map: low RAM up to the EBDA, the EBDA and BIOS area reserved, then
/// every RAM region from 1 MiB up.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<hvm_memmap_table_entry> {
    let entry = |addr: u64, size: u64, type_: u32| hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}

/// A module the guest finds through `hvm_start_info` (Linux takes the first as its
/// initrd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub addr: u64,
    pub size: u64,
}

/// Writes `hvm_start_info` (command line at [`CMDLINE_START`], the initrd as the only
/// module if there is one, no ACPI) and the memory map.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<Module>,
) -> Result<(), GuestMemoryError> {
    let map = memory_map(mem);
    let max_entries = (ZERO_PAGE_START - PVH_MEMMAP_START) as usize / 24;
    let map = &map[..map.len().min(max_entries)];
    for (i, e) in map.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(PVH_MEMMAP_START + 24 * i as u64))?;
    }
    let mut info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(m) = initrd {
        let entry = hvm_modlist_entry {
            paddr: m.addr,
            size: m.size,
            ..Default::default()
        };
        mem.write_obj(entry, GuestAddress(PVH_MODLIST_START))?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_covers_low_reserved_and_high_ram() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let map = memory_map(&mem);
        let tuples: Vec<_> = map.iter().map(|e| (e.addr, e.size, e.type_)).collect();
        assert_eq!(
            tuples,
            vec![
                (0, EBDA_START, E820_RAM),
                (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
                (HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM),
            ]
        );
        write_start_info(&mem, None).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!((info.magic, info.memmap_entries), (PVH_MAGIC, 3));
        assert_eq!(info.nr_modules, 0);
    }

    #[test]
    fn the_initrd_is_the_only_module() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let initrd = Module {
            addr: 0x300_0000,
            size: 0x1234,
        };
        write_start_info(&mem, Some(initrd)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        let entry: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((entry.paddr, entry.size), (0x300_0000, 0x1234));
    }
}

//! Placing the initrd: page aligned at the top of the RAM below the MMIO gap, above
//! the kernel, where Linux finds it through the PVH module list.

use std::fs::File;
use std::path::Path;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::pvh::Module;
use super::BootError;

const PAGE: u64 = 0x1000;

/// Where an initrd of `size` bytes goes: the highest page-aligned address in the RAM
/// region at 0 (below the MMIO gap) at or above `kernel_end`.
pub fn place(low_ram_end: u64, kernel_end: u64, size: u64) -> Option<u64> {
    let addr = low_ram_end.checked_sub(size)? & !(PAGE - 1);
    (size > 0 && addr >= kernel_end).then_some(addr)
}

/// Copies the initrd at `path` into `mem` above `kernel_end`.
pub fn load(mem: &GuestMemoryMmap, path: &Path, kernel_end: u64) -> Result<Module, BootError> {
    let open_err = |source| BootError::OpenInitrd {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let low_ram_end = mem
        .find_region(GuestAddress(0))
        .map_or(0, GuestMemoryRegion::len);
    let too_large = || BootError::InitrdTooLarge {
        size,
        room: low_ram_end.saturating_sub(kernel_end),
    };
    let addr = place(low_ram_end, kernel_end, size).ok_or_else(too_large)?;
    let count = usize::try_from(size).map_err(|_| too_large())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, count)
        .map_err(|source| BootError::ReadInitrd {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Module { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_page_aligned_at_the_top_above_the_kernel() {
        assert_eq!(place(0x0800_0000, 0x0200_0000, 0x1234), Some(0x07ff_e000));
        assert_eq!(place(0x0800_0000, 0x0200_0000, 0x1000), Some(0x07ff_f000));
        assert_eq!(place(0x0800_0000, 0x07ff_e000, 0x1001), Some(0x07ff_e000));
        assert_eq!(place(0x0800_0000, 0x07ff_f000, 0x1001), None);
        assert_eq!(place(0x0800_0000, 0, 0x0900_0000), None);
        assert_eq!(place(0x0800_0000, 0, 0), None);
    }

    #[test]
    fn loads_the_file_and_reports_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        std::fs::write(&path, b"070701 cpio").unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let m = load(&mem, &path, 2 << 20).unwrap();
        assert_eq!(
            m,
            Module {
                addr: (4 << 20) - PAGE,
                size: 11
            }
        );
        let mut back = [0u8; 11];
        mem.read_slice(&mut back, GuestAddress(m.addr)).unwrap();
        assert_eq!(&back, b"070701 cpio");
        assert!(matches!(
            load(&mem, &path, 4 << 20),
            Err(BootError::InitrdTooLarge { .. })
        ));
        assert!(matches!(
            load(&mem, &dir.path().join("missing"), 0),
            Err(BootError::OpenInitrd { .. })
        ));
    }
}

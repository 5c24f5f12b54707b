//! Guest memory laid out around the MMIO gap: private anonymous mappings, or — when a
//! vhost-user backend must map guest RAM too (virtio-fs) — shared mappings of one
//! memfd, whose fd and offsets the backend gets in `SET_MEM_TABLE`.

use std::fs::File;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::ram_ranges;

/// The memfd's name (shown in /proc/<pid>/maps and fd links).
const MEMFD_NAME: &std::ffi::CStr = c"cocoon-guest-ram";

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size {0:#x} is not a multiple of 4 KiB or is zero")]
    BadSize(u64),
    #[error("mapping guest memory")]
    Mmap(#[source] vm_memory::mmap::FromRangesError),
    #[error("creating the guest memory memfd")]
    Memfd(#[source] nix::Error),
    #[error("sizing the guest memory memfd to {size:#x} bytes")]
    MemfdSize {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("sealing the guest memory memfd")]
    MemfdSeal(#[source] nix::Error),
}

/// Maps `size` bytes of guest RAM (anonymous, private).
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ranges(size)?
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(MemoryError::Mmap)
}

/// Maps `size` bytes of guest RAM shared (`MAP_SHARED`) from one memfd, each region
/// at its own offset of the file, so another process handed the fd sees the same
/// memory. The memfd's size is sealed: no process holding the fd can shrink it under
/// our mappings (which would turn guest memory accesses into SIGBUS) or grow it.
pub fn create_shared(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = ranges(size)?;
    let fd = memfd_create(
        MEMFD_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(MemoryError::Memfd)?;
    let file = File::from(fd);
    file.set_len(size)
        .map_err(|source| MemoryError::MemfdSize { size, source })?;
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).map_err(MemoryError::MemfdSeal)?;
    let file = std::sync::Arc::new(file);
    let mut offset = 0u64;
    let regions: Vec<(GuestAddress, usize, Option<FileOffset>)> = ranges
        .into_iter()
        .map(|(start, len)| {
            let at = FileOffset::from_arc(file.clone(), offset);
            offset += len as u64;
            (GuestAddress(start), len, Some(at))
        })
        .collect();
    GuestMemoryMmap::from_ranges_with_files(regions).map_err(MemoryError::Mmap)
}

/// The RAM ranges for `size` bytes, checked.
fn ranges(size: u64) -> Result<Vec<(u64, usize)>, MemoryError> {
    if size == 0 || !size.is_multiple_of(0x1000) || usize::try_from(size).is_err() {
        return Err(MemoryError::BadSize(size));
    }
    Ok(ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (start, len as usize))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(create(0), Err(MemoryError::BadSize(0))));
        assert!(matches!(create(4097), Err(MemoryError::BadSize(4097))));
        assert!(matches!(create_shared(4097), Err(MemoryError::BadSize(_))));
        let mem = create(2 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((2 << 20) - 1));
        assert!(mem.iter().all(|r| r.file_offset().is_none()));
    }

    #[test]
    fn shared_memory_is_the_memfd() {
        let mem = create_shared(4 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        let region = mem.iter().next().unwrap();
        let file_offset = region.file_offset().expect("backed by the memfd");
        assert_eq!(file_offset.start(), 0);
        let file = file_offset.file();
        assert_eq!(file.metadata().unwrap().len(), 4 << 20);
        // A write through the mapping is seen through the fd, and the other way round.
        mem.write_obj(0xfeed_beefu32, GuestAddress(0x1234)).unwrap();
        let mut b = [0u8; 4];
        file.read_exact_at(&mut b, 0x1234).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xfeed_beef);
        file.write_all_at(&[7; 4], 0x2000).unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x2000)).unwrap(),
            0x0707_0707
        );
        // The size is sealed.
        assert!(file.set_len(1 << 20).is_err());
        assert!(file.set_len(8 << 20).is_err());
    }

    #[test]
    fn shared_memory_above_the_gap_uses_the_next_file_offset() {
        use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};
        // Sparse: nothing is touched but two words.
        let size = MMIO_GAP_START + (2 << 20);
        let mem = create_shared(size).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[1].start_addr(), GuestAddress(MMIO_GAP_END));
        assert_eq!(regions[1].file_offset().unwrap().start(), MMIO_GAP_START);
        mem.write_obj(0x55u8, GuestAddress(MMIO_GAP_END + 8))
            .unwrap();
        let mut b = [0u8];
        let file = regions[1].file_offset().unwrap().file();
        file.read_exact_at(&mut b, MMIO_GAP_START + 8).unwrap();
        assert_eq!(b[0], 0x55);
    }
}

//! Guest memory: anonymous mappings laid out around the MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::ram_ranges;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size {0:#x} is not a multiple of 4 KiB or is zero")]
    BadSize(u64),
    #[error("mapping guest memory")]
    Mmap(#[source] vm_memory::mmap::FromRangesError),
}

/// Maps `size` bytes of guest RAM (anonymous, private).
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size == 0 || !size.is_multiple_of(0x1000) || usize::try_from(size).is_err() {
        return Err(MemoryError::BadSize(size));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(MemoryError::Mmap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(create(0), Err(MemoryError::BadSize(0))));
        assert!(matches!(create(4097), Err(MemoryError::BadSize(4097))));
        let mem = create(2 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((2 << 20) - 1));
    }
}

//! The driver's ring addresses as the backend takes them: vhost-user SET_VRING_ADDR
//! carries addresses in this process's address space, which the backend maps back to
//! guest addresses through the SET_MEM_TABLE regions. Each ring must lie wholly inside
//! one guest memory region, so that its host range is one contiguous mapping.

use vhost::VringConfigData;
use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

/// A ring the backend cannot be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("the {what} ({len:#x} bytes at guest address {addr:#x}) is not inside one guest memory region")]
    OutsideMemory {
        what: &'static str,
        addr: u64,
        len: u64,
    },
}

/// The vring configuration for `queue`, its addresses translated to host addresses.
pub fn vring_config(queue: &Queue, mem: &GuestMemoryMmap) -> Result<VringConfigData, RingError> {
    let size = u64::from(queue.size());
    // virtio 1.2 §2.7: descriptors of 16 bytes; avail: flags, idx, ring[size],
    // used_event; used: flags, idx, ring[size] of 8 bytes, avail_event.
    let desc = host_address(mem, "descriptor table", queue.desc_table(), 16 * size)?;
    let avail = host_address(mem, "available ring", queue.avail_ring(), 6 + 2 * size)?;
    let used = host_address(mem, "used ring", queue.used_ring(), 6 + 8 * size)?;
    Ok(VringConfigData {
        queue_max_size: queue.max_size(),
        queue_size: queue.size(),
        flags: 0,
        desc_table_addr: desc,
        used_ring_addr: used,
        avail_ring_addr: avail,
        log_addr: None,
    })
}

/// The host address of the `len` bytes (at least one) at guest address `addr`.
fn host_address(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    len: u64,
) -> Result<u64, RingError> {
    let err = || RingError::OutsideMemory { what, addr, len };
    let (region, offset) = mem.to_region_addr(GuestAddress(addr)).ok_or_else(err)?;
    let last = offset
        .raw_value()
        .checked_add(len.checked_sub(1).ok_or_else(err)?)
        .ok_or_else(err)?;
    region
        .check_address(MemoryRegionAddress(last))
        .ok_or_else(err)?;
    let host = region.get_host_address(offset).map_err(|_| err())?;
    Ok(host as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::queue::{write_field, QueueField};

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x2_0000), 0x1_0000),
        ])
        .unwrap()
    }

    fn queue(size: u16, desc: u32, avail: u32, used: u32) -> Queue {
        let mut q = Queue::new(1024).unwrap();
        write_field(&mut q, QueueField::Size, size.into()).unwrap();
        write_field(&mut q, QueueField::DescLow, desc).unwrap();
        write_field(&mut q, QueueField::DriverLow, avail).unwrap();
        write_field(&mut q, QueueField::DeviceLow, used).unwrap();
        q
    }

    fn host(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.get_host_address(GuestAddress(addr)).unwrap() as u64
    }

    #[test]
    fn rings_translate_to_host_addresses() {
        let mem = memory();
        let q = queue(256, 0x1000, 0x2_2000, 0x2_3000);
        let ring = vring_config(&q, &mem).unwrap();
        assert_eq!(ring.queue_size, 256);
        assert_eq!(ring.queue_max_size, 1024);
        assert_eq!(ring.flags, 0);
        assert_eq!(ring.desc_table_addr, host(&mem, 0x1000));
        assert_eq!(ring.avail_ring_addr, host(&mem, 0x2_2000));
        assert_eq!(ring.used_ring_addr, host(&mem, 0x2_3000));
    }

    #[test]
    fn rings_outside_or_across_regions_are_refused() {
        let mem = memory();
        // The descriptor table runs 16 bytes past the end of the first region.
        let q = queue(16, 0x1_0000 - 16 * 16 + 16, 0x2000, 0x3000);
        assert_eq!(
            vring_config(&q, &mem).err(),
            Some(RingError::OutsideMemory {
                what: "descriptor table",
                addr: 0xff10,
                len: 256
            })
        );
        // Exactly up to the end is fine.
        let q = queue(16, 0x1_0000 - 16 * 16, 0x2000, 0x3000);
        assert!(vring_config(&q, &mem).is_ok());
        // In the hole between the regions, or beyond all memory.
        let q = queue(16, 0x1000, 0x1_8000, 0x3000);
        assert!(matches!(
            vring_config(&q, &mem).err(),
            Some(RingError::OutsideMemory {
                what: "available ring",
                ..
            })
        ));
        let q = queue(16, 0x1000, 0x2000, 0xffff_f000);
        assert!(matches!(
            vring_config(&q, &mem).err(),
            Some(RingError::OutsideMemory {
                what: "used ring",
                ..
            })
        ));
    }
}

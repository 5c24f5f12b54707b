//! Queue glue between the transport's registers and `virtio_queue::Queue`: every
//! value comes from the guest and is checked before a queue takes it.

use std::ops::Deref;

use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// A queue configuration register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueField {
    Size,
    DescLow,
    DescHigh,
    DriverLow,
    DriverHigh,
    DeviceLow,
    DeviceHigh,
}

/// Why a queue refused a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("queue size {0} is zero, not a power of two or above the maximum")]
    Size(u32),
    #[error("ring address {0:#x} is misaligned")]
    Alignment(u64),
    #[error("queue {0} does not lie in guest memory")]
    NotInMemory(usize),
    #[error("queue maximum size {0} is invalid")]
    MaxSize(u16),
}

/// Fresh queues with the given maximum sizes, each at its maximum size.
pub fn new_queues(max_sizes: &[u16]) -> Result<Vec<Queue>, QueueError> {
    max_sizes
        .iter()
        .map(|&max| Queue::new(max).map_err(|_| QueueError::MaxSize(max)))
        .collect()
}

/// Writes one 32-bit half of a ring address, or the size. A refused value leaves the
/// queue unchanged.
pub fn write_field(queue: &mut Queue, field: QueueField, value: u32) -> Result<(), QueueError> {
    let low = |old: u64| GuestAddress((old & !0xffff_ffff) | u64::from(value));
    let high = |old: u64| GuestAddress((old & 0xffff_ffff) | (u64::from(value) << 32));
    let align = |r: Result<(), virtio_queue::Error>, addr: GuestAddress| {
        r.map_err(|_| QueueError::Alignment(addr.0))
    };
    match field {
        QueueField::Size => {
            let size = u16::try_from(value).map_err(|_| QueueError::Size(value))?;
            queue
                .try_set_size(size)
                .map_err(|_| QueueError::Size(value))
        }
        QueueField::DescLow | QueueField::DescHigh => {
            let old = queue.desc_table();
            let addr = if field == QueueField::DescLow {
                low(old)
            } else {
                high(old)
            };
            align(queue.try_set_desc_table_address(addr), addr)
        }
        QueueField::DriverLow | QueueField::DriverHigh => {
            let old = queue.avail_ring();
            let addr = if field == QueueField::DriverLow {
                low(old)
            } else {
                high(old)
            };
            align(queue.try_set_avail_ring_address(addr), addr)
        }
        QueueField::DeviceLow | QueueField::DeviceHigh => {
            let old = queue.used_ring();
            let addr = if field == QueueField::DeviceLow {
                low(old)
            } else {
                high(old)
            };
            align(queue.try_set_used_ring_address(addr), addr)
        }
    }
}

/// Checks that every ready queue's rings lie in guest memory.
pub fn check_ready_queues(queues: &[Queue], mem: &GuestMemoryMmap) -> Result<(), QueueError> {
    match queues.iter().position(|q| q.ready() && !q.is_valid(mem)) {
        Some(index) => Err(QueueError::NotInMemory(index)),
        None => Ok(()),
    }
}

/// How many descriptors a device takes in one chain, and whether it follows indirect
/// tables. virtio-queue's chain walker follows an indirect descriptor whether or not
/// VIRTIO_RING_F_INDIRECT_DESC was negotiated, and a table holds up to 65 535
/// descriptors: a device checks each chain with [`check_chain`] before walking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLimits {
    /// Most descriptors in one chain, indirect ones included.
    pub max_descriptors: usize,
    /// VIRTIO_RING_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
}

impl ChainLimits {
    /// At most `max_descriptors` per chain; indirect tables only where the driver
    /// acked VIRTIO_RING_F_INDIRECT_DESC in `acked_features`.
    pub fn negotiated(max_descriptors: usize, acked_features: u64) -> ChainLimits {
        ChainLimits {
            max_descriptors,
            indirect: acked_features & (1 << VIRTIO_RING_F_INDIRECT_DESC) != 0,
        }
    }
}

/// Why a chain was refused before any of its buffers was touched.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainRefusal {
    #[error(
        "the chain uses an indirect descriptor, and VIRTIO_RING_F_INDIRECT_DESC was not negotiated"
    )]
    Indirect,
    #[error("the chain has more than {0} descriptors")]
    TooLong(usize),
}

/// Checks `chain`, just popped from `queue`, against `limits`. Costs at most one read
/// per descriptor of the chain's direct part (no more than the queue's size) and
/// `limits.max_descriptors + 1` steps of the chain walker: an indirect table is never
/// walked to its end.
pub fn check_chain<M>(
    queue: &Queue,
    chain: &DescriptorChain<M>,
    limits: ChainLimits,
) -> Result<(), ChainRefusal>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    if !limits.indirect && uses_indirect(queue, chain) {
        return Err(ChainRefusal::Indirect);
    }
    let max = limits.max_descriptors;
    if chain.clone().take(max.saturating_add(1)).count() > max {
        return Err(ChainRefusal::TooLong(max));
    }
    Ok(())
}

/// Whether the direct part of `chain` (in `queue`'s descriptor table) has a descriptor
/// with the INDIRECT flag, which virtio-queue's walker would follow. Walks the way the
/// walker does: from the head along NEXT, at most the queue's size of descriptors,
/// ending at an index outside the table or a descriptor outside guest memory.
fn uses_indirect<M>(queue: &Queue, chain: &DescriptorChain<M>) -> bool
where
    M: Deref,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let table = GuestAddress(queue.desc_table());
    let size = queue.size();
    let mut index = chain.head_index();
    for _ in 0..size {
        if index >= size {
            return false;
        }
        let Some(at) = table.checked_add(16 * u64::from(index)) else {
            return false;
        };
        let Ok(desc) = mem.read_obj::<Descriptor>(at) else {
            return false;
        };
        if desc.refers_to_indirect_table() {
            return true;
        }
        if !desc.has_next() {
            return false;
        }
        index = desc.next();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::QueueOwnedT;

    #[test]
    fn sizes_and_alignment_are_checked() {
        let mut q = new_queues(&[256]).unwrap().remove(0);
        assert_eq!(
            write_field(&mut q, QueueField::Size, 0),
            Err(QueueError::Size(0))
        );
        assert_eq!(
            write_field(&mut q, QueueField::Size, 3),
            Err(QueueError::Size(3))
        );
        assert_eq!(
            write_field(&mut q, QueueField::Size, 512),
            Err(QueueError::Size(512))
        );
        assert_eq!(
            write_field(&mut q, QueueField::Size, 1 << 17),
            Err(QueueError::Size(1 << 17))
        );
        assert_eq!(write_field(&mut q, QueueField::Size, 16), Ok(()));
        assert_eq!(q.size(), 16);
        assert!(write_field(&mut q, QueueField::DescLow, 0x1008).is_err());
        assert_eq!(write_field(&mut q, QueueField::DescLow, 0x1000), Ok(()));
        assert_eq!(write_field(&mut q, QueueField::DescHigh, 1), Ok(()));
        assert_eq!(q.desc_table(), 0x1_0000_1000);
        assert!(write_field(&mut q, QueueField::DeviceLow, 0x2002).is_err());
        assert_eq!(write_field(&mut q, QueueField::DriverLow, 0x2002), Ok(()));
    }

    #[test]
    fn ready_queues_must_lie_in_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut qs = new_queues(&[16, 16]).unwrap();
        assert_eq!(check_ready_queues(&qs, &mem), Ok(()));
        qs[1].set_ready(true);
        write_field(&mut qs[1], QueueField::DescLow, 0xfff0).unwrap();
        assert_eq!(
            check_ready_queues(&qs, &mem),
            Err(QueueError::NotInMemory(1))
        );
        assert!(new_queues(&[3]).is_err());
    }

    const TABLE: u64 = 0x1000;
    const INDIRECT_TABLE: u64 = 0x10_0000;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const F_INDIRECT: u16 = 4;
    /// The most descriptors an indirect table holds.
    const TABLE_MAX: u16 = u16::MAX;

    fn desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        mem.write_obj(Descriptor::new(addr, len, flags, next), GuestAddress(at))
            .unwrap();
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    /// A fresh ready queue of 16 at [`TABLE`] in `mem`, whose available ring offers
    /// `heads`.
    fn offer(mem: &GuestMemoryMmap, heads: &[u16]) -> Queue {
        let mut q = new_queues(&[256]).unwrap().remove(0);
        write_field(&mut q, QueueField::Size, 16).unwrap();
        write_field(&mut q, QueueField::DescLow, TABLE as u32).unwrap();
        write_field(&mut q, QueueField::DriverLow, (TABLE + 0x1000) as u32).unwrap();
        write_field(&mut q, QueueField::DeviceLow, (TABLE + 0x2000) as u32).unwrap();
        q.set_ready(true);
        for (i, head) in heads.iter().enumerate() {
            mem.write_obj(*head, GuestAddress(TABLE + 0x1004 + 2 * i as u64))
                .unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(TABLE + 0x1002))
            .unwrap();
        q
    }

    /// Checks each chain the queue offers, in order.
    fn check_all(
        mem: &GuestMemoryMmap,
        mut q: Queue,
        limits: ChainLimits,
    ) -> Vec<Result<(), ChainRefusal>> {
        let mut results = Vec::new();
        while let Some(chain) = q.iter(mem).unwrap().next() {
            results.push(check_chain(&q, &chain, limits));
        }
        results
    }

    /// The longest indirect table, of zero-length writable descriptors, at
    /// [`INDIRECT_TABLE`]: what costs a chain walker the most per chain.
    fn longest_table(mem: &GuestMemoryMmap) {
        for i in 0..TABLE_MAX {
            let flags = if i + 1 < TABLE_MAX {
                F_WRITE | F_NEXT
            } else {
                F_WRITE
            };
            desc(
                mem,
                INDIRECT_TABLE + 16 * u64::from(i),
                0x8000,
                0,
                flags,
                i + 1,
            );
        }
    }

    #[test]
    fn chains_through_indirect_tables_are_refused_unless_negotiated() {
        let mem = memory();
        longest_table(&mem);
        // Chain 0: a plain two-descriptor chain. Chain 2: straight into the longest
        // table. Chain 5: one direct descriptor, then the table.
        desc(&mem, TABLE, 0x8000, 10, F_NEXT, 1);
        desc(&mem, TABLE + 16, 0x8100, 10, F_WRITE, 0);
        let table_len = 16 * u32::from(TABLE_MAX);
        desc(&mem, TABLE + 32, INDIRECT_TABLE, table_len, F_INDIRECT, 0);
        desc(&mem, TABLE + 80, 0x8000, 10, F_NEXT, 6);
        desc(&mem, TABLE + 96, INDIRECT_TABLE, table_len, F_INDIRECT, 0);

        let not_offered = ChainLimits::negotiated(16, 1 << 32);
        assert!(!not_offered.indirect);
        assert_eq!(
            check_all(&mem, offer(&mem, &[0, 2, 5]), not_offered),
            [
                Ok(()),
                Err(ChainRefusal::Indirect),
                Err(ChainRefusal::Indirect)
            ]
        );
        // Negotiated, the table is followed, but only up to the cap.
        let negotiated = ChainLimits::negotiated(16, 1 << VIRTIO_RING_F_INDIRECT_DESC);
        assert!(negotiated.indirect);
        assert_eq!(
            check_all(&mem, offer(&mem, &[0, 2, 5]), negotiated),
            [
                Ok(()),
                Err(ChainRefusal::TooLong(16)),
                Err(ChainRefusal::TooLong(16))
            ]
        );
    }

    #[test]
    fn long_direct_chains_are_capped() {
        let mem = memory();
        // Chain 0: 8 descriptors; chain 8: 8 more. A cap of 7 refuses both, 8 takes both.
        for i in 0..16u16 {
            let flags = if i % 8 == 7 { 0 } else { F_NEXT };
            desc(&mem, TABLE + 16 * u64::from(i), 0x8000, 1, flags, i + 1);
        }
        let limits = |max| ChainLimits {
            max_descriptors: max,
            indirect: false,
        };
        assert_eq!(
            check_all(&mem, offer(&mem, &[0, 8]), limits(7)),
            [Err(ChainRefusal::TooLong(7)), Err(ChainRefusal::TooLong(7))]
        );
        assert_eq!(
            check_all(&mem, offer(&mem, &[0, 8]), limits(8)),
            [Ok(()), Ok(())]
        );
        // A loop through NEXT ends at the queue's size, as the walker's does.
        desc(&mem, TABLE + 16 * 15, 0x8000, 1, F_NEXT, 8);
        assert_eq!(check_all(&mem, offer(&mem, &[8]), limits(16)), [Ok(())]);
        assert_eq!(
            check_all(&mem, offer(&mem, &[8]), limits(15)),
            [Err(ChainRefusal::TooLong(15))]
        );
    }
}

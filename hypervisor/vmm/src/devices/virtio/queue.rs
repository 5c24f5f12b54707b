//! Queue glue between the transport's registers and `virtio_queue::Queue`: every
//! value comes from the guest and is checked before a queue takes it.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

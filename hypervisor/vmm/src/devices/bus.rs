//! An address space (port I/O or MMIO) of non-overlapping device ranges.
//!
//! Every access comes from the guest: the bus checks its size (1 to 8 bytes) and
//! that it lies wholly inside one device's range before the device sees it, and
//! hands the device an offset from the range's base. Anything else is counted and
//! ignored; reads of nothing return all ones, like an empty ISA bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A device on a [`Bus`]. `offset` is from the start of the device's range and
/// `offset + data.len()` never exceeds the range; `data` is 1 to 8 bytes.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors while adding devices.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
    #[error("range {base:#x}+{len:#x} overlaps a device")]
    Overlap { base: u64, len: u64 },
}

/// Counters for accesses the bus refused.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// Accesses that hit no device.
    pub unmapped: AtomicU64,
    /// Accesses with a bad size or straddling a range's end.
    pub invalid: AtomicU64,
}

struct Range {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of device ranges. Built once, then shared read-only by the vCPU threads.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<Range>,
    metrics: BusMetrics,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Adds `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::BadRange { base, len });
        }
        if self
            .ranges
            .iter()
            .any(|r| base < r.base + r.len && r.base < base + len)
        {
            return Err(BusError::Overlap { base, len });
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(at, Range { base, len, device });
        Ok(())
    }

    /// The refused-access counters.
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// Finds the device for an access; counts and returns `None` for a bad one.
    fn resolve(&self, addr: u64, size: usize) -> Option<(&Range, u64)> {
        let idx = self.ranges.partition_point(|r| r.base <= addr);
        let range = idx.checked_sub(1).map(|i| &self.ranges[i]);
        let Some(range) = range.filter(|r| addr - r.base < r.len) else {
            self.metrics.unmapped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let offset = addr - range.base;
        let end = offset.checked_add(size as u64);
        let fits = (1..=8).contains(&size) && end.is_some_and(|end| end <= range.len);
        if !fits {
            self.metrics.invalid.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some((range, offset))
    }

    /// Reads into `data`; returns whether a device handled it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((range, offset)) => {
                lock(&range.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes `data`; returns whether a device handled it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((range, offset)) => {
                lock(&range.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device. A device that panicked while locked is still served: the guest
/// must not be able to turn one bug into a VMM-wide panic.
fn lock(device: &Mutex<dyn BusDevice>) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last = Some((offset, data.to_vec()));
        }
    }

    fn bus_with(base: u64, len: u64) -> (Bus, Arc<Mutex<Recorder>>) {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(base, len, dev.clone()).unwrap();
        (bus, dev)
    }

    #[test]
    fn routes_offsets_inside_the_range() {
        let (bus, dev) = bus_with(0x3f8, 8);
        assert!(bus.write(0x3fa, &[1, 2]));
        assert_eq!(dev.lock().unwrap().last, Some((2, vec![1, 2])));
        let mut b = [0u8; 1];
        assert!(bus.read(0x3ff, &mut b));
        assert_eq!(b, [7]);
    }

    #[test]
    fn refuses_straddling_oversized_and_unmapped_accesses() {
        let (bus, dev) = bus_with(0x1000, 0x10);
        let mut big = [0u8; 16];
        assert!(!bus.read(0x1000, &mut big));
        assert!(!bus.write(0x100e, &[0; 4]));
        assert!(!bus.write(0x1000, &[]));
        let mut b = [0u8; 2];
        assert!(!bus.read(0xfff, &mut b));
        assert_eq!(b, [0xff, 0xff]);
        assert!(!bus.read(0x1010, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
        assert_eq!(dev.lock().unwrap().last, None);
        assert_eq!(bus.metrics().invalid.load(Ordering::Relaxed), 3);
        assert_eq!(bus.metrics().unmapped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn rejects_overlaps_and_empty_ranges() {
        let (mut bus, dev) = bus_with(0x100, 0x10);
        assert_eq!(
            bus.insert(0x10f, 1, dev.clone()),
            Err(BusError::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert!(bus.insert(0xf8, 8, dev.clone()).is_ok());
        assert!(bus.insert(0x110, 0, dev.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, dev).is_err());
    }

    #[test]
    fn a_range_reaching_the_top_of_the_space_does_not_overflow() {
        let (bus, dev) = bus_with(1, u64::MAX - 1);
        assert!(!bus.write(u64::MAX - 1, &[0; 8]));
        assert!(bus.write(u64::MAX - 1, &[7]));
        assert_eq!(dev.lock().unwrap().last, Some((u64::MAX - 2, vec![7])));
    }

    /// Checks every access it gets against its own range length.
    struct Bounded(u64);

    impl BusDevice for Bounded {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            assert!(offset + data.len() as u64 <= self.0 && (1..=8).contains(&data.len()));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            assert!(offset + data.len() as u64 <= self.0 && (1..=8).contains(&data.len()));
        }
    }

    proptest::proptest! {
        #[test]
        fn devices_only_see_accesses_inside_their_range(
            addr in proptest::prop_oneof![0u64..0x2000, proptest::arbitrary::any::<u64>()],
            size in 0usize..=16,
            write in proptest::arbitrary::any::<bool>(),
        ) {
            let mut bus = Bus::new();
            for (base, len) in [(0x0u64, 1u64), (0x10, 3), (0x3f8, 8), (0x1000, 0x1000)] {
                bus.insert(base, len, Arc::new(Mutex::new(Bounded(len)))).unwrap();
            }
            let mut data = vec![0u8; size];
            if write {
                bus.write(addr, &data);
            } else {
                bus.read(addr, &mut data);
            }
        }
    }
}

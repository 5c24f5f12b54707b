//! Property tests: the transport under guest-controlled garbage.

use std::sync::atomic::Ordering;

use proptest::prelude::*;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;

use super::mmio::{MmioTransport, CONFIG_SPACE_OFFSET, MMIO_MAGIC};
use super::test_utils::{fake_transport, r32, w32, FAKE_FEATURES};
use crate::devices::BusDevice;

const READABLE: [u32; 15] = [
    VIRTIO_MMIO_MAGIC_VALUE,
    VIRTIO_MMIO_VERSION,
    VIRTIO_MMIO_DEVICE_ID,
    VIRTIO_MMIO_VENDOR_ID,
    VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_SHM_LEN_LOW,
    VIRTIO_MMIO_SHM_LEN_HIGH,
    VIRTIO_MMIO_SHM_BASE_LOW,
    VIRTIO_MMIO_SHM_BASE_HIGH,
    VIRTIO_MMIO_CONFIG_GENERATION,
    VIRTIO_MMIO_MAGIC_VALUE,
];

const WRITABLE: [u32; 16] = [
    VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW,
    VIRTIO_MMIO_QUEUE_USED_HIGH,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_INTERRUPT_ACK,
    VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_SHM_SEL,
];

#[derive(Clone, Debug)]
enum Op {
    Read { offset: u64, size: usize },
    Write { offset: u64, data: Vec<u8> },
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(WRITABLE.to_vec()).prop_map(u64::from),
        2 => prop::sample::select(READABLE.to_vec()).prop_map(u64::from),
        2 => 0u64..0x200,
        1 => any::<u64>(),
    ]
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..16, Just(0xf), Just(0xb), Just(0x1000), any::<u32>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (offset(), 0usize..=16).prop_map(|(offset, size)| Op::Read { offset, size }),
        (offset(), value()).prop_map(|(offset, v)| Op::Write {
            offset,
            data: v.to_le_bytes().to_vec()
        }),
        (offset(), prop::collection::vec(any::<u8>(), 0..=16))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
    ]
}

/// Whether the transport must count this access as invalid.
fn is_invalid(op: &Op) -> bool {
    let (offset, len, known): (u64, usize, &[u32]) = match op {
        Op::Read { offset, size } => (*offset, *size, &READABLE),
        Op::Write { offset, data } => (*offset, data.len(), &WRITABLE),
    };
    if offset >= CONFIG_SPACE_OFFSET {
        return false;
    }
    len != 4 || !offset.is_multiple_of(4) || !known.contains(&(offset as u32))
}

fn apply(t: &mut MmioTransport, op: &Op) {
    match op {
        Op::Read { offset, size } => {
            let mut buf = vec![0xaa; *size];
            t.read(*offset, &mut buf);
        }
        Op::Write { offset, data } => t.write(*offset, data),
    }
}

proptest! {
    #[test]
    fn garbage_never_panics_and_invariants_hold(ops in prop::collection::vec(op(), 0..200)) {
        let (mut t, state) = fake_transport();
        let metrics = t.metrics();
        let mut expected_invalid = 0;
        for op in &ops {
            apply(&mut t, op);
            expected_invalid += u64::from(is_invalid(op));
            let status = t.status();
            if status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
                prop_assert_ne!(status & VIRTIO_CONFIG_S_FEATURES_OK, 0);
            }
            if t.is_activated() {
                prop_assert_ne!(status & VIRTIO_CONFIG_S_DRIVER_OK, 0);
            }
            prop_assert_eq!(t.acked_features() & !FAKE_FEATURES, 0);
            prop_assert_eq!(r32(&mut t, VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
        }
        prop_assert_eq!(metrics.invalid_access.load(Ordering::Relaxed), expected_invalid);
        let s = state.lock().unwrap();
        prop_assert_eq!(s.notifies.len() as u64, metrics.notify.load(Ordering::Relaxed));
        prop_assert!(s.notifies.iter().all(|&q| q < 2));
    }

    #[test]
    fn a_reset_recovers_from_any_garbage(ops in prop::collection::vec(op(), 0..100)) {
        let (mut t, state) = fake_transport();
        for op in &ops {
            apply(&mut t, op);
        }
        let before = state.lock().unwrap().activations;
        w32(&mut t, VIRTIO_MMIO_STATUS, 0);
        prop_assert_eq!(t.status(), 0);
        let ack_driver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        w32(&mut t, VIRTIO_MMIO_STATUS, ack_driver);
        w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        w32(&mut t, VIRTIO_MMIO_STATUS, ack_driver | VIRTIO_CONFIG_S_FEATURES_OK);
        for (q, base) in [(0u32, 0x10000u32), (1, 0x20000)] {
            w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, q);
            w32(&mut t, VIRTIO_MMIO_QUEUE_NUM, 16);
            w32(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, base);
            w32(&mut t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
            w32(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000);
            w32(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
            w32(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000);
            w32(&mut t, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
            w32(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        }
        w32(&mut t, VIRTIO_MMIO_STATUS, ack_driver | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
        prop_assert!(t.is_activated());
        prop_assert_eq!(state.lock().unwrap().activations, before + 1);
    }
}

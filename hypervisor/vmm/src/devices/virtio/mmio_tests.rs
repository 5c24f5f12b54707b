use std::sync::atomic::Ordering;

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;

use super::*;
use crate::devices::virtio::test_utils::{self, fake_transport, r32, w32, FAKE_FEATURES};

const ACK_DRIVER: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

/// Negotiates VERSION_1 and sets FEATURES_OK.
fn negotiate(t: &mut MmioTransport) {
    w32(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    w32(t, VIRTIO_MMIO_STATUS, ACK_DRIVER);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    w32(
        t,
        VIRTIO_MMIO_STATUS,
        ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
}

fn setup_queue(t: &mut MmioTransport, index: u32, base: u32) {
    w32(t, VIRTIO_MMIO_QUEUE_SEL, index);
    w32(t, VIRTIO_MMIO_QUEUE_NUM, 8);
    w32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, base);
    w32(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000);
    w32(t, VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000);
    w32(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

#[test]
fn identification_registers() {
    let (mut t, _) = fake_transport();
    assert_eq!(r32(&mut t, VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_VERSION), 2);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_DEVICE_ID), 42);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    assert_eq!(
        r32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES),
        FAKE_FEATURES as u32
    );
    w32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 1);
    w32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 2);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
}

#[test]
fn full_initialization_activates_and_notifies() {
    let (mut t, state) = fake_transport();
    negotiate(&mut t);
    assert_eq!(t.acked_features(), 1 << VIRTIO_F_VERSION_1);
    setup_queue(&mut t, 0, 0x10000);
    setup_queue(&mut t, 1, 0x20000);
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
    );
    assert!(t.is_activated());
    assert_eq!(state.lock().unwrap().activations, 1);
    w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 2);
    assert_eq!(state.lock().unwrap().notifies, vec![1]);
    // Queue registers are frozen after DRIVER_OK.
    w32(&mut t, VIRTIO_MMIO_QUEUE_NUM, 4);
    assert!(t.metrics().refused_write.load(Ordering::Relaxed) >= 2);
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(t.status(), 0);
    assert_eq!(state.lock().unwrap().resets, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
}

#[test]
fn legacy_driver_gets_features_ok_refused() {
    let (mut t, _) = fake_transport();
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK_DRIVER);
    w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0b1);
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK_DRIVER);
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK,
    );
    assert!(!t.is_activated());
}

#[test]
fn out_of_order_status_and_unoffered_features_are_refused() {
    let (mut t, _) = fake_transport();
    w32(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_DRIVER);
    assert_eq!(t.status(), 0);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK_DRIVER);
    w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(t.acked_features(), FAKE_FEATURES & 0xffff_ffff);
    w32(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    assert_eq!(t.status(), ACK_DRIVER, "bits clear only through reset");
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK_DRIVER | VIRTIO_CONFIG_S_NEEDS_RESET,
    );
    assert_eq!(t.status(), ACK_DRIVER);
    // Queue setup before FEATURES_OK is refused.
    w32(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
}

#[test]
fn queue_outside_memory_fails_activation_with_needs_reset() {
    let (mut t, state) = fake_transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0xff000);
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
    );
    assert!(!t.is_activated());
    assert_ne!(t.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(state.lock().unwrap().activations, 0);
    assert_eq!(
        r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_CONFIG
    );
    w32(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

#[test]
fn bad_widths_and_offsets_are_invalid_but_config_space_takes_any_width() {
    let (mut t, _) = fake_transport();
    let mut two = [0u8; 2];
    t.read(0, &mut two);
    assert_eq!(two, [0, 0]);
    t.write(VIRTIO_MMIO_STATUS as u64 + 1, &[1, 0, 0, 0]);
    t.write(0x0fc, &[1, 0, 0, 0]);
    let mut four = [0u8; 4];
    t.read(0x0f0, &mut four);
    assert_eq!(t.metrics().invalid_access.load(Ordering::Relaxed), 4);
    t.read(CONFIG_SPACE_OFFSET + 6, &mut four);
    assert_eq!(four, [7, 8, 0, 0]);
    t.read(u64::MAX - 1, &mut two);
    assert_eq!(two, [0, 0]);
}

#[test]
fn a_failed_device_shows_needs_reset_until_the_driver_resets_it() {
    let (mut t, state) = fake_transport();
    let activate = |t: &mut MmioTransport| {
        negotiate(t);
        setup_queue(t, 0, 0x10000);
        setup_queue(t, 1, 0x20000);
        w32(t, VIRTIO_MMIO_STATUS, 0xf);
        assert!(t.is_activated());
    };
    activate(&mut t);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0xf);
    t.interrupt.signal_needs_reset().unwrap();
    assert_eq!(
        r32(&mut t, VIRTIO_MMIO_STATUS),
        0xf | VIRTIO_CONFIG_S_NEEDS_RESET
    );
    assert_eq!(t.status(), 0xf | VIRTIO_CONFIG_S_NEEDS_RESET);
    assert_eq!(
        r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_CONFIG
    );
    // The driver cannot clear it but by a reset.
    let refused = t.metrics().refused_write.load(Ordering::Relaxed);
    w32(&mut t, VIRTIO_MMIO_STATUS, 0xf);
    assert_eq!(
        t.metrics().refused_write.load(Ordering::Relaxed),
        refused + 1
    );
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0x4f);
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(state.lock().unwrap().resets, 1);
    activate(&mut t);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0xf);
}

#[test]
fn a_failed_activation_is_logged_naming_the_device_and_its_place() {
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)])
            .unwrap();
    let (mut t, _irq) = test_utils::transport(crate::devices::virtio::Rng::new().unwrap(), mem);
    negotiate(&mut t);
    // DRIVER_OK without the request queue ready: the device refuses.
    let ((), log) = test_utils::capture_log(|| {
        w32(
            &mut t,
            VIRTIO_MMIO_STATUS,
            ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
        );
    });
    assert!(!t.is_activated());
    assert!(log.contains("virtio device activation failed"), "{log}");
    assert!(log.contains("device=\"rng\""), "{log}");
    assert!(
        log.contains(&format!("mmio_base={:#x}", test_utils::MMIO_BASE)),
        "{log}"
    );
    assert!(log.contains("queue 0 is not ready"), "{log}");
}

//! A recording fake device and helpers for driving the transport in tests.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, ActivateError, ActiveDevice, MmioTransport, VirtioDevice, VirtioInterrupt,
};
use crate::devices::BusDevice;

/// What the fake device saw.
#[derive(Debug, Default)]
pub struct FakeState {
    pub activations: usize,
    pub resets: usize,
    pub notifies: Vec<u16>,
    pub refuse_activation: bool,
}

/// A device with two queues of 16 and an 8-byte read-only config space.
pub struct FakeDevice {
    pub state: Arc<Mutex<FakeState>>,
}

pub const FAKE_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | 0b101;

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        42
    }
    fn features(&self) -> u64 {
        FAKE_FEATURES
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&0x0807_0605_0403_0201u64.to_le_bytes(), offset, data);
    }
    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError> {
        let mut s = self.state.lock().unwrap();
        if s.refuse_activation {
            return Err(ActivateError::QueueNotReady(0));
        }
        assert_eq!(active.queues.len(), 2);
        s.activations += 1;
        Ok(())
    }
    fn queue_notify(&mut self, index: u16) {
        self.state.lock().unwrap().notifies.push(index);
    }
    fn reset(&mut self) {
        self.state.lock().unwrap().resets += 1;
    }
}

/// A transport around a [`FakeDevice`] with 1 MiB of guest memory.
pub fn fake_transport() -> (MmioTransport, Arc<Mutex<FakeState>>) {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let device = FakeDevice {
        state: state.clone(),
    };
    (transport(device, mem).0, state)
}

/// Where [`transport`] says its registers are.
pub const MMIO_BASE: u64 = 0xd000_3000;

/// A transport around `device` on `mem` (at [`MMIO_BASE`]), and the eventfd its
/// interrupt raises.
pub fn transport(
    device: impl VirtioDevice + 'static,
    mem: GuestMemoryMmap,
) -> (MmioTransport, EventFd) {
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(VirtioInterrupt::new(irq.try_clone().unwrap()));
    let t = MmioTransport::new(Box::new(device), mem, interrupt, MMIO_BASE).unwrap();
    (t, irq)
}

/// Runs `f` with this thread's log (`tracing`, at every level) going to a buffer;
/// returns what `f` returns and the log.
pub fn capture_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (value, log)
}

/// The features the device offers, both words.
pub fn device_features(t: &mut MmioTransport) -> u64 {
    w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    let low = r32(t, VIRTIO_MMIO_DEVICE_FEATURES);
    w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    let high = r32(t, VIRTIO_MMIO_DEVICE_FEATURES);
    u64::from(high) << 32 | u64::from(low)
}

/// The start of a test driver: reset, ACKNOWLEDGE | DRIVER, `features` (VERSION_1
/// included; a word that is zero is left as the reset left it), FEATURES_OK (not
/// checked here).
pub fn negotiate(t: &mut MmioTransport, features: u64) {
    let ack_driver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    w32(t, VIRTIO_MMIO_STATUS, 0);
    w32(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    w32(t, VIRTIO_MMIO_STATUS, ack_driver);
    for sel in 0..2 {
        let word = (features >> (32 * sel)) as u32;
        if word != 0 {
            w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            w32(t, VIRTIO_MMIO_DRIVER_FEATURES, word);
        }
    }
    w32(
        t,
        VIRTIO_MMIO_STATUS,
        ack_driver | VIRTIO_CONFIG_S_FEATURES_OK,
    );
}

/// Sets queue `q` up: checks that the device offers `max` entries, gives it `size`
/// with its rings from `base` (the descriptor table; the available ring a page on, the
/// used ring two), and marks it ready.
pub fn setup_queue(t: &mut MmioTransport, q: u32, max: u16, size: u16, base: u64) {
    let base = u32::try_from(base).unwrap();
    w32(t, VIRTIO_MMIO_QUEUE_SEL, q);
    assert_eq!(r32(t, VIRTIO_MMIO_QUEUE_NUM_MAX), u32::from(max));
    w32(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
    w32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, base);
    w32(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000);
    w32(t, VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000);
    w32(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

/// Makes `head` available on the split queue of `size` entries whose available ring is
/// at `avail`: puts it in slot `*idx % size`, then publishes `*idx + 1` (kept in `idx`).
pub fn publish(mem: &GuestMemoryMmap, avail: u64, size: u16, idx: &mut u16, head: u16) {
    let slot = u64::from(*idx % size);
    mem.write_obj(head, GuestAddress(avail + 4 + 2 * slot))
        .unwrap();
    *idx = idx.wrapping_add(1);
    mem.write_obj(*idx, GuestAddress(avail + 2)).unwrap();
}

pub fn w32(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

pub fn r32(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut b = [0u8; 4];
    t.read(u64::from(offset), &mut b);
    u32::from_le_bytes(b)
}

/// Runs `f` on a thread of its own and returns what it returns; panics naming `what`
/// if it has not returned after `patience` (a guard against a test hanging forever,
/// not a measure of how long `f` should take). A panic of `f` is passed on.
pub fn returns_within<T: Send + 'static>(
    what: &str,
    patience: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // The receiver is gone only if the test gave up already.
        let _ = tx.send(f());
    });
    match rx.recv_timeout(patience) {
        Ok(value) => {
            thread.join().unwrap();
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within {patience:?}")
        }
    }
}

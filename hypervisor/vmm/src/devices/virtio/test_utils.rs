//! A recording fake device and helpers for driving the transport in tests.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateError, ActiveDevice, MmioTransport, VirtioDevice, VirtioInterrupt};
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
        let config = 0x0807_0605_0403_0201u64.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok());
            *b = at.and_then(|o| config.get(o).copied()).unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
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
    let interrupt = Arc::new(VirtioInterrupt::new(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ));
    let device = Box::new(FakeDevice {
        state: state.clone(),
    });
    (MmioTransport::new(device, mem, interrupt).unwrap(), state)
}

pub fn w32(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

pub fn r32(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut b = [0u8; 4];
    t.read(u64::from(offset), &mut b);
    u32::from_le_bytes(b)
}

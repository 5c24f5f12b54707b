//! virtio devices over our own virtio-mmio transport (virtio 1.x, "version 2").
//!
//! The transport owns the register state and validates everything the guest writes;
//! a device sees its queues only once the driver set DRIVER_OK and every ready queue
//! lies in guest memory. Queue processing uses `virtio_queue::Queue` directly on
//! `GuestMemoryMmap`: on the notifying vCPU thread for the rng, on a device thread of
//! its own (woken by an ioeventfd) for vsock and net.

pub mod block;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod vsock;

#[cfg(test)]
mod mmio_proptest;
#[cfg(test)]
pub(crate) mod test_utils;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use block::Block;
pub use fs::VirtioFs;
pub use mmio::MmioTransport;
pub use net::Net;
pub use rng::Rng;
pub use vsock::Vsock;

/// A device behind the virtio-mmio transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// The features the device offers, `VIRTIO_F_VERSION_1` included.
    fn features(&self) -> u64;
    /// Maximum size of each queue (each a power of two, at most 32768).
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads device config space at `offset`; any offset and length may come in
    /// ([`read_config_bytes`] serves a config space held as bytes).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device config space; any offset and length may come in.
    ///
    /// By default the config space is read-only and writes are ignored: no device here
    /// offers a writable field (virtio-blk has no CONFIG_WCE, virtio-net no
    /// CTRL_MAC_ADDR, and the vsock, fs and rng config spaces are read-only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the driver's queues.
    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError>;
    /// The driver notified queue `index` (< the number of queues).
    fn queue_notify(&mut self, index: u16);
    /// Drops the queues and returns to the state before activation.
    fn reset(&mut self);
}

/// Reads `data.len()` bytes at `offset` of a config space held as `config`; bytes past
/// its end (or at offsets that do not fit a `usize`) read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        let at = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok());
        *b = at.and_then(|o| config.get(o).copied()).unwrap_or(0);
    }
}

/// The activation prologue: the driver's queues as the `N` a device has, those at
/// `must_be_ready` (each below `N`) ready. Another number of queues is
/// [`ActivateError::QueueCount`]; the first of `must_be_ready` not ready,
/// [`ActivateError::QueueNotReady`].
pub fn take_queues<const N: usize>(
    queues: Vec<Queue>,
    must_be_ready: &[usize],
) -> Result<[Queue; N], ActivateError> {
    let got = queues.len();
    let queues = <[Queue; N]>::try_from(queues)
        .map_err(|_| ActivateError::QueueCount { expected: N, got })?;
    if let Some(&index) = must_be_ready.iter().find(|&&i| !queues[i].ready()) {
        return Err(ActivateError::QueueNotReady(index));
    }
    Ok(queues)
}

/// What a device gets at activation.
pub struct ActiveDevice {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub interrupt: Arc<VirtioInterrupt>,
    pub acked_features: u64,
}

/// Why a device refused activation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    #[error("expected {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    /// A ready queue's rings are unusable for the device (beyond what the transport
    /// checks).
    #[error("queue {index}: {why}")]
    Ring { index: usize, why: String },
    /// The device's host side (a vhost-user backend, say) refused or is gone.
    #[error("device backend: {0}")]
    Backend(String),
}

/// A device's interrupt: the InterruptStatus bits and the irqfd that raises its line.
pub struct VirtioInterrupt {
    status: AtomicU32,
    irq: EventFd,
    /// The device failed while active: the transport shows DEVICE_NEEDS_RESET.
    needs_reset: AtomicBool,
}

impl VirtioInterrupt {
    pub fn new(irq: EventFd) -> VirtioInterrupt {
        VirtioInterrupt {
            status: AtomicU32::new(0),
            irq,
            needs_reset: AtomicBool::new(false),
        }
    }

    /// Tells the driver there are used buffers.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_VRING)
    }

    /// Tells the driver the configuration (or device status) changed.
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_CONFIG)
    }

    /// The device failed while active and cannot go on until the driver resets it:
    /// the status register shows DEVICE_NEEDS_RESET from now until the reset, and the
    /// driver learns of it from a configuration change interrupt (virtio 1.2 §2.1.2).
    pub fn signal_needs_reset(&self) -> io::Result<()> {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.raise(VIRTIO_MMIO_INT_CONFIG)
    }

    /// Whether the device asked for a reset ([`VirtioInterrupt::signal_needs_reset`]).
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    fn raise(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irq.write(1)
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

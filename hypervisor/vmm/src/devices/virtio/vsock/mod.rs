//! virtio-vsock over virtio-mmio: cocoon-vsock's [`VsockDevice`] (the same device and
//! hybrid muxer QEMU gets over vhost-user), driven in process.
//!
//! Two halves share the driver's queues:
//! - [`Vsock`], the [`VirtioDevice`] behind the mmio transport, on the vCPU threads:
//!   config space (the guest CID), activation and reset;
//! - the event loop ([`event_handler`]) on a device thread of its own, which owns the
//!   `VsockDevice` and processes the queues when the guest notifies (a KVM ioeventfd
//!   on QueueNotify, so no VM exit) or a host socket is ready (the device's epoll fd).
//!
//! Both take the queues' lock only briefly and never block under it, and a reset takes
//! the queues away under that lock: once `reset` returns, the device thread no longer
//! touches the driver's rings.

mod event_handler;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cocoon_vsock::{Metrics, VsockConfig, VsockDevice, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, take_queues, ActivateError, ActiveDevice, VirtioDevice, VirtioInterrupt,
};
use crate::devices::thread::DeviceThread;
use crate::seccomp::ThreadKind;

pub use cocoon_vsock::VIRTIO_ID_VSOCK;

/// Maximum size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Counters for the glue between the transport and the device (the device counts
/// packets itself: [`Vsock::device_metrics`]).
#[derive(Debug, Default)]
pub struct VsockGlueMetrics {
    /// Wake-ups of the device thread.
    pub wakeups: AtomicU64,
    /// Queue failures (rings the guest broke); the device then waits for a reset.
    pub queue_errors: AtomicU64,
    /// Failures of the host side (epoll, timers).
    pub host_errors: AtomicU64,
    /// Failures to raise the interrupt.
    pub interrupt_errors: AtomicU64,
}

/// The driver's queues while the device is active.
struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<VirtioInterrupt>,
}

/// What the two halves share, under one lock.
#[derive(Default)]
struct Slot {
    active: Option<Active>,
    /// The driver reset the device: connections go before anything else happens.
    reset_pending: bool,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why the vsock device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock device")]
    Device(#[from] cocoon_vsock::Error),
    #[error("starting the vsock thread")]
    Thread(#[source] std::io::Error),
}

/// The vsock device as the transport sees it.
pub struct Vsock {
    guest_cid: u64,
    shared: Arc<Shared>,
    /// Wakes the device thread; also the ioeventfd KVM signals on QueueNotify.
    kick: Arc<EventFd>,
    device_metrics: Arc<Metrics>,
    metrics: Arc<VsockGlueMetrics>,
}

impl Vsock {
    /// Creates the device (binding its hybrid socket, removed again when the returned
    /// thread ends) and starts its event loop. `kick` wakes the loop: register it as
    /// the ioeventfd of the transport's QueueNotify register, or leave it to
    /// [`VirtioDevice::queue_notify`], which writes it too.
    pub fn new(config: VsockConfig, kick: EventFd) -> Result<(Vsock, DeviceThread), VsockError> {
        let device = VsockDevice::new(config)?;
        let vsock = Vsock {
            guest_cid: device.guest_cid(),
            shared: Arc::default(),
            kick: Arc::new(kick),
            device_metrics: device.metrics_handle(),
            metrics: Arc::default(),
        };
        let handler = event_handler::EventHandler::new(
            device,
            vsock.shared.clone(),
            vsock.kick.clone(),
            vsock.metrics.clone(),
        );
        let thread =
            DeviceThread::spawn_as("vsock", ThreadKind::Vsock, move |stop| handler.run(stop))
                .map_err(VsockError::Thread)?;
        Ok((vsock, thread))
    }

    /// The device's packet counters.
    pub fn device_metrics(&self) -> Arc<Metrics> {
        self.device_metrics.clone()
    }

    pub fn metrics(&self) -> Arc<VsockGlueMetrics> {
        self.metrics.clone()
    }

    fn wake(&self) {
        if self.kick.write(1).is_err() {
            // Only an overflowing counter fails, and then the thread is awake anyway.
            self.metrics.host_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError> {
        let mut queues: [Queue; 3] = take_queues(active.queues, &[RX_QUEUE, TX_QUEUE])?;
        let event_idx = active.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        queues.iter_mut().for_each(|q| q.set_event_idx(event_idx));
        let [rx, tx, _event] = queues;
        const _: () = assert!(RX_QUEUE == 0 && TX_QUEUE == 1 && EVENT_QUEUE == 2);
        self.shared.lock().active = Some(Active {
            mem: active.mem,
            rx,
            tx,
            interrupt: active.interrupt,
        });
        // Host connections may be waiting for the guest already.
        self.wake();
        Ok(())
    }

    fn queue_notify(&mut self, _index: u16) {
        // Reached only where KVM took no ioeventfd for QueueNotify.
        self.wake();
    }

    fn reset(&mut self) {
        let mut slot = self.shared.lock();
        slot.active = None;
        slot.reset_pending = true;
        drop(slot);
        self.wake();
    }
}

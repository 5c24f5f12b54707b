//! virtio-blk (virtio 1.2 §5.2) over virtio-mmio, backed by a raw disk image on the
//! host: one request queue, served with synchronous pread/pwrite/fdatasync.
//!
//! Two halves share the driver's queue, as for vsock:
//! - [`Block`], the [`VirtioDevice`] behind the mmio transport, on the vCPU threads:
//!   features, config space, activation and reset;
//! - the event loop ([`event_handler`]) on a device thread of its own, which owns the
//!   [`Disk`] (file and lock) and serves requests ([`worker`]) when the guest notifies
//!   (a KVM ioeventfd on QueueNotify, so no VM exit).
//!
//! The thread holds the queue's lock while it serves a batch, so once `reset` returns
//! it no longer touches the driver's rings or buffers; a reset asks it to let go
//! between requests rather than waiting for the whole batch.
//!
//! Offered: VERSION_1, RING_EVENT_IDX, SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, and RO for a
//! read-only drive. Requests: IN, OUT, FLUSH, GET_ID; others answer UNSUPP.

#[cfg(test)]
mod alloc_probe;
mod disk;
mod event_handler;
mod request;
#[cfg(test)]
mod tests;
mod worker;
#[cfg(test)]
mod worker_tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::queue::ChainLimits;
use super::{
    read_config_bytes, take_queues, ActivateError, ActiveDevice, VirtioDevice, VirtioInterrupt,
};
use crate::config::DriveSpec;
use crate::devices::thread::DeviceThread;

pub use disk::{Disk, DiskError, SECTOR_SIZE};

/// The request queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// Most data segments per request the driver may use (config `seg_max`).
pub const SEG_MAX: u32 = 128;
/// Largest data segment (config `size_max`).
pub const SIZE_MAX: u32 = 64 * 1024;
/// Most data bytes one request may carry; larger ones fail with IOERR.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;

/// `struct virtio_blk_config` up to `blk_size`: capacity (le64), size_max, seg_max
/// (le32 each), geometry (unused, 4 bytes), blk_size (le32). Reads beyond are zero.
const CONFIG_SIZE: usize = 24;

/// Counters for one drive.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Descriptor chains taken from the queue.
    pub requests: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flushes: AtomicU64,
    /// Malformed requests (no status byte, short header, buffers outside memory,
    /// out of range, unaligned, too large, writes to a read-only disk).
    pub bad_requests: AtomicU64,
    /// Failures of the host file (pread, pwrite, fdatasync).
    pub io_errors: AtomicU64,
    /// Requests of a type this device does not implement.
    pub unsupported: AtomicU64,
    /// Rings the guest broke; the device then waits for a reset.
    pub queue_errors: AtomicU64,
    /// Failures to raise the interrupt.
    pub interrupt_errors: AtomicU64,
}

/// The driver's queue while the device is active.
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<VirtioInterrupt>,
    /// What chains the queue takes (indirect tables only if negotiated: never, as
    /// they are not offered).
    chains: ChainLimits,
}

/// What the two halves share.
#[derive(Default)]
struct Shared {
    active: Mutex<Option<Active>>,
    /// A reset waits for the lock: the thread lets go after the current request.
    resetting: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a drive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("starting the virtio-blk thread for {path}")]
    Thread {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The block device as the transport sees it.
pub struct Block {
    features: u64,
    config: [u8; CONFIG_SIZE],
    shared: Arc<Shared>,
    /// Wakes the device thread; also the ioeventfd KVM signals on QueueNotify.
    kick: Arc<EventFd>,
    metrics: Arc<BlockMetrics>,
}

impl Block {
    /// Opens and locks `spec`'s image (released when the returned thread ends) and
    /// starts the device thread. `kick` wakes it: register it as the ioeventfd of the
    /// transport's QueueNotify register, or leave it to
    /// [`VirtioDevice::queue_notify`], which writes it too.
    pub fn new(spec: &DriveSpec, kick: EventFd) -> Result<(Block, DeviceThread), BlockError> {
        let disk = Disk::open(spec)?;
        let features = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (u64::from(disk.read_only()) << VIRTIO_BLK_F_RO);
        let block = Block {
            features,
            config: config_space(disk.capacity()),
            shared: Arc::default(),
            kick: Arc::new(kick),
            metrics: Arc::default(),
        };
        let handler = event_handler::EventHandler::new(
            worker::Worker::new(disk, block.metrics.clone()),
            block.shared.clone(),
            block.kick.clone(),
            block.metrics.clone(),
        );
        let thread =
            DeviceThread::spawn("virtio-blk", move |stop| handler.run(stop)).map_err(|source| {
                BlockError::Thread {
                    path: spec.path.clone(),
                    source,
                }
            })?;
        Ok((block, thread))
    }

    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }

    fn wake(&self) {
        // Only an overflowing counter fails, and then the thread is awake anyway.
        let _ = self.kick.write(1);
    }
}

fn config_space(capacity: u64) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    c[..8].copy_from_slice(&capacity.to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError> {
        let [mut queue] = take_queues(active.queues, &[0])?;
        queue.set_event_idx(active.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
        *self.shared.lock() = Some(Active {
            mem: active.mem,
            queue,
            interrupt: active.interrupt,
            chains: ChainLimits::negotiated(worker::MAX_DESCRIPTORS, active.acked_features),
        });
        // Requests may be waiting already.
        self.wake();
        Ok(())
    }

    fn queue_notify(&mut self, _index: u16) {
        // Reached only where KVM took no ioeventfd for QueueNotify.
        self.wake();
    }

    fn reset(&mut self) {
        self.shared.resetting.store(true, Ordering::Release);
        *self.shared.lock() = None;
        self.shared.resetting.store(false, Ordering::Release);
    }
}

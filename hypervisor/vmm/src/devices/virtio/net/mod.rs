//! virtio-net (virtio 1.2 §5.1) over virtio-mmio, its host side a Linux tap interface.
//!
//! Two halves share the driver's queues, as for vsock:
//! - [`Net`], the [`VirtioDevice`] behind the mmio transport, on the vCPU threads:
//!   features, config space (MAC, link status), activation and reset;
//! - the event loop ([`event_handler`]) on a device thread of its own, which owns the
//!   [`Tap`] and moves frames when the guest notifies (one KVM ioeventfd on
//!   QueueNotify serves both queues: a kick looks at both), when the tap has frames,
//!   or when the VMM stops it. Ending the thread closes the tap: one this device
//!   created vanishes with it.
//!
//! Features: `VERSION_1`, `MAC`, `STATUS` (the link is always up) and
//! `RING_EVENT_IDX`. No offloads — no checksum offload, TSO, GSO or UFO either way —
//! and no mergeable RX buffers: the guest sends and receives whole frames of at most
//! its MTU plus the Ethernet header (1514 bytes at the default MTU), each after a
//! 12-byte `virtio_net_hdr_v1` whose offload fields are zero. The tap is opened with
//! the same header and offloads off, so the kernel never hands over a partial
//! checksum or a GSO super-frame; one that claims to is dropped and counted.
//!
//! Guest input is bounded: a TX chain over [`MAX_TX_CHAIN_LEN`] bytes or without a
//! whole Ethernet header is dropped; an RX chain too small for the next frame gets a
//! later frame instead (the frame is dropped); chains outside guest memory, of more
//! than [`MAX_CHAIN_DESCRIPTORS`] descriptors or through an indirect table (not
//! offered) are returned unused, before anything is read from their buffers. Every case is counted in [`NetMetrics`]. A broken ring (an
//! available index running ahead of the ring) stops the device until the driver
//! resets it. The loop serves at most [`BUDGET`] chains per queue per round, so
//! neither direction starves the other, and stops reading the tap while the guest
//! has no RX buffers (the tap is polled edge-triggered), so a guest that posts none
//! costs no CPU.

mod event_handler;
pub mod mac;
mod rx;
pub mod tap;
mod tx;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::queue::ChainLimits;
use super::{
    read_config_bytes, take_queues, ActivateError, ActiveDevice, VirtioDevice, VirtioInterrupt,
};
use crate::config::{NetSpec, NetSpecError};
use crate::devices::thread::DeviceThread;

pub use mac::MacAddr;
pub use tap::{Tap, TapError};

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// See [`RX_QUEUE`].
pub const TX_QUEUE: usize = 1;
/// `struct virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const VNET_HDR_LEN: usize = 12;
/// An Ethernet header: destination, source, type.
pub const ETH_HLEN: usize = 14;
/// Longest TX chain taken: a header and a 65550-byte frame (a 64 KiB IP packet with
/// Ethernet and VLAN headers). Without TSO the guest sends far less.
pub const MAX_TX_CHAIN_LEN: usize = VNET_HDR_LEN + 65550;
/// Chains served per queue per round of the event loop.
pub const BUDGET: usize = 256;
/// Most descriptors in one chain. Linux sends a frame in at most MAX_SKB_FRAGS + 2
/// (at most 47) and posts an RX buffer (no mergeable or big buffers) in one or two.
pub const MAX_CHAIN_DESCRIPTORS: usize = 64;

/// The net device's counters.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames written to the tap, and their bytes (headers not counted).
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames written into RX buffers, and their bytes (headers not counted).
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// TX chains not sent: over [`MAX_TX_CHAIN_LEN`], shorter than a header and an
    /// Ethernet header, or refused by the tap.
    pub tx_dropped: AtomicU64,
    /// Frames read from the tap and not delivered: too big for the RX buffer at hand,
    /// runts, or carrying offload metadata.
    pub rx_dropped: AtomicU64,
    /// Chains outside guest memory, of more than [`MAX_CHAIN_DESCRIPTORS`]
    /// descriptors or through an indirect table, TX chains without a whole header, RX
    /// chains that cannot hold one, heads the used ring refuses.
    pub bad_descriptors: AtomicU64,
    /// Failed tap reads and writes (other than "nothing to read").
    pub tap_errors: AtomicU64,
    /// Broken rings (an available index ahead of the ring); the device then waits for
    /// a reset.
    pub queue_errors: AtomicU64,
    /// Failures to raise the interrupt.
    pub interrupt_errors: AtomicU64,
    /// Wake-ups of the device thread.
    pub wakeups: AtomicU64,
}

impl NetMetrics {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error; logs only the first of its kind, so a guest cannot flood the log.
    fn count_first(counter: &AtomicU64, error: &dyn std::fmt::Display, what: &str) {
        if counter.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(%error, "{what}");
        }
    }
}

/// Why the net device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("net device on tap {0:?}")]
    Spec(String, #[source] NetSpecError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("starting the net thread for tap {0:?}")]
    Thread(String, #[source] std::io::Error),
}

/// The driver's queues while the device is active.
struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<VirtioInterrupt>,
    /// What chains the queues take (indirect tables only if negotiated: never, as
    /// they are not offered).
    chains: ChainLimits,
}

/// What the two halves share: the queues while active. Both take the lock briefly
/// and never block under it; once `reset` has taken the queues, the device thread no
/// longer touches the driver's rings.
#[derive(Default)]
struct Shared {
    active: Mutex<Option<Active>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one pass over a queue did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pass {
    /// Chains were returned to the used ring.
    used: bool,
    /// The budget ran out with work left.
    more: bool,
}

/// The next available chain; an error if the available index is bogus. Heads out of
/// range are skipped and counted: no used element can name them.
fn pop<'a>(
    queue: &mut Queue,
    mem: &'a GuestMemoryMmap,
    m: &NetMetrics,
) -> Result<Option<DescriptorChain<&'a GuestMemoryMmap>>, virtio_queue::Error> {
    // Each turn consumes an available entry, so this ends within a ring's worth.
    loop {
        let Some(chain) = queue.iter(mem)?.next() else {
            return Ok(None);
        };
        if chain.head_index() < queue.size() {
            return Ok(Some(chain));
        }
        NetMetrics::inc(&m.bad_descriptors);
    }
}

/// Returns `head` (in range) to the driver; a used ring that refuses it (it lies in
/// memory checked at activation, so never) counts as a bad descriptor.
fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32, m: &NetMetrics) -> bool {
    match queue.add_used(mem, head, len) {
        Ok(()) => true,
        Err(_) => {
            NetMetrics::inc(&m.bad_descriptors);
            false
        }
    }
}

/// The net device as the transport sees it.
pub struct Net {
    /// `struct virtio_net_config` up to `status`: mac[6], le16 status.
    config: [u8; 8],
    mac: MacAddr,
    tap_name: String,
    shared: Arc<Shared>,
    /// Wakes the device thread; also the ioeventfd KVM signals on QueueNotify.
    kick: Arc<EventFd>,
    metrics: Arc<NetMetrics>,
}

impl Net {
    /// Opens (or creates) the tap `spec` names and starts the device thread, which owns
    /// it: stopping the thread closes the tap. `kick` wakes the thread: register it as
    /// the ioeventfd of the transport's QueueNotify register, or leave it to
    /// [`VirtioDevice::queue_notify`], which writes it too.
    pub fn new(spec: &NetSpec, kick: EventFd) -> Result<(Net, DeviceThread), NetError> {
        spec.validate()
            .map_err(|e| NetError::Spec(spec.tap.clone(), e))?;
        let tap = Tap::open(&spec.tap)?;
        let mac = spec.mac.unwrap_or_else(|| MacAddr::derived_from(&spec.tap));
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac.octets());
        config[6..].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        let net = Net {
            config,
            mac,
            tap_name: spec.tap.clone(),
            shared: Arc::default(),
            kick: Arc::new(kick),
            metrics: Arc::default(),
        };
        let handler = event_handler::EventHandler::new(
            tap,
            net.shared.clone(),
            net.kick.clone(),
            net.metrics.clone(),
        );
        let thread =
            DeviceThread::spawn(&format!("net-{}", spec.tap), move |stop| handler.run(stop))
                .map_err(|e| NetError::Thread(spec.tap.clone(), e))?;
        tracing::info!(tap = %spec.tap, mac = %mac, "virtio-net device ready");
        Ok((net, thread))
    }

    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The tap interface.
    pub fn tap_name(&self) -> &str {
        &self.tap_name
    }

    fn wake(&self) {
        // Only an overflowing counter fails, and then the thread is awake anyway.
        let _ = self.kick.write(1);
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_NET_F_STATUS)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError> {
        let mut queues: [Queue; 2] = take_queues(active.queues, &[RX_QUEUE, TX_QUEUE])?;
        let event_idx = active.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        queues.iter_mut().for_each(|q| q.set_event_idx(event_idx));
        let [rx, tx] = queues;
        const _: () = assert!(RX_QUEUE == 0 && TX_QUEUE == 1);
        *self.shared.lock() = Some(Active {
            mem: active.mem,
            rx,
            tx,
            interrupt: active.interrupt,
            chains: ChainLimits::negotiated(MAX_CHAIN_DESCRIPTORS, active.acked_features),
        });
        // Frames may be waiting in the tap already.
        self.wake();
        Ok(())
    }

    fn queue_notify(&mut self, _index: u16) {
        // Reached only where KVM took no ioeventfd for QueueNotify.
        self.wake();
    }

    fn reset(&mut self) {
        *self.shared.lock() = None;
    }
}

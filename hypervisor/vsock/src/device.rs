//! The virtio-vsock device core, independent of the transport: the vhost-user backend
//! and an in-process virtio-mmio transport both drive it through the same calls.
//!
//! The embedding event loop waits on [`VsockDevice::as_raw_fd`] (an epoll fd, readable
//! when a host socket needs attention) and on the queues' kick events, and calls:
//! - TX kick → [`VsockDevice::process_queues`] (or `process_tx` then `process_rx`),
//! - RX kick → `process_queues` (or `process_rx`),
//! - the device fd readable → [`VsockDevice::handle_event`], then `process_queues`.
//!
//! and signals the guest for each queue the call says needs it.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use crate::config::VsockConfig;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::muxer::Muxer;
use crate::packet::{read_tx, RxBuf, TxPacket};
use crate::proto::MAX_PKT_DATA;
use crate::Error;

/// The virtio-vsock device id.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Queue indices: guest-bound packets, host-bound packets, transport events.
pub const RX_QUEUE: usize = 0;
/// See [`RX_QUEUE`].
pub const TX_QUEUE: usize = 1;
/// See [`RX_QUEUE`]. This device never sends events (they matter only for migration).
pub const EVENT_QUEUE: usize = 2;
/// Number of queues.
pub const NUM_QUEUES: usize = 3;

/// Which queues have new used buffers the guest should be told about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    /// Signal the RX queue.
    pub rx: bool,
    /// Signal the TX queue.
    pub tx: bool,
}

/// A virtio-vsock device whose host side is the hybrid-vsock unix socket.
pub struct VsockDevice {
    guest_cid: u64,
    muxer: Muxer,
    metrics: Arc<Metrics>,
    tx_data: Vec<u8>,
    rx_data: Vec<u8>,
    tx_stalled: bool,
}

impl VsockDevice {
    /// Validates `config` and binds its hybrid socket, which must not exist yet; it is
    /// removed again when the device is dropped.
    pub fn new(config: VsockConfig) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::default());
        let guest_cid = config.guest_cid;
        Ok(VsockDevice {
            guest_cid,
            muxer: Muxer::new(config, metrics.clone())?,
            metrics,
            tx_data: vec![0; MAX_PKT_DATA],
            rx_data: vec![0; MAX_PKT_DATA],
            tx_stalled: false,
        })
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The device config space (`struct virtio_vsock_config`): the guest CID, le64.
    pub fn config_space(&self) -> [u8; 8] {
        self.guest_cid.to_le_bytes()
    }

    /// The device counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// A handle on the live counters, for reading from another thread.
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Open connections, in any state.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Host clients that have not finished their `CONNECT` line.
    pub fn pending_client_count(&self) -> usize {
        self.muxer.pending_client_count()
    }

    /// Queued connection-less replies for the guest.
    pub fn control_queue_len(&self) -> usize {
        self.muxer.control_queue_len()
    }

    /// TX processing stopped because replies to the guest are backed up; it resumes once
    /// the guest gives RX buffers (`process_queues` does that by itself).
    pub fn tx_stalled(&self) -> bool {
        self.tx_stalled
    }

    /// The guest reset the device: every connection is dropped (host clients see EOF) and
    /// nothing queued for the guest is kept.
    pub fn reset(&mut self) {
        self.muxer.reset();
        self.tx_stalled = false;
    }

    /// Handles host-socket readiness (the fd from [`AsRawFd`] is readable). Never blocks.
    pub fn handle_event(&mut self) -> Result<(), Error> {
        self.muxer.handle_host_events()
    }

    /// Processes both queues in the order that keeps packets moving: TX, RX, and TX again
    /// if it had stalled on a full reply queue. A queue that is `None` (not enabled) or not
    /// ready is skipped.
    pub fn process_queues<M: GuestMemory>(
        &mut self,
        mem: &M,
        mut rx: Option<&mut Queue>,
        mut tx: Option<&mut Queue>,
    ) -> Result<Notify, Error> {
        let mut n = Notify::default();
        // Bounded: each further round needs the previous one to have drained replies.
        for _ in 0..4 {
            if let Some(tx) = tx.as_deref_mut().filter(|q| q.ready()) {
                n.tx |= self.process_tx(mem, tx)?;
            }
            if let Some(rx) = rx.as_deref_mut().filter(|q| q.ready()) {
                n.rx |= self.process_rx(mem, rx)?;
            }
            if !self.tx_stalled || !self.muxer.can_take_tx() {
                break;
            }
        }
        Ok(n)
    }

    /// Takes every packet the guest has put on the TX queue. Returns whether the guest
    /// should be notified. Packets may queue replies: call `process_rx` afterwards.
    pub fn process_tx<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, Error> {
        let mut used = false;
        self.tx_stalled = false;
        loop {
            if queue.event_idx_enabled() {
                queue.disable_notification(mem)?;
            }
            while self.muxer.can_take_tx() {
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                let head = chain.head_index();
                self.tx_one(mem, chain);
                used |= self.add_used(mem, queue, head, 0)?;
            }
            if !self.muxer.can_take_tx() {
                self.tx_stalled = true;
                break;
            }
            if !queue.event_idx_enabled() || !queue.enable_notification(mem)? {
                break;
            }
        }
        Ok(used && queue.needs_notification(mem)?)
    }

    fn tx_one<M: GuestMemory>(&mut self, mem: &M, chain: virtio_queue::DescriptorChain<&M>) {
        Metrics::inc(&self.metrics.tx_packets);
        match read_tx(mem, chain, &mut self.tx_data) {
            TxPacket::Ok(hdr) => {
                let len = if hdr.op() == Some(crate::proto::Op::Rw) {
                    hdr.len as usize
                } else {
                    0
                };
                Metrics::add(&self.metrics.tx_bytes, len as u64);
                let data = self.tx_data.get(..len).unwrap_or_default();
                self.muxer.send_pkt(&hdr, data);
            }
            TxPacket::BadChain => Metrics::inc(&self.metrics.bad_descriptors),
            TxPacket::BadPayload(hdr) => {
                Metrics::inc(&self.metrics.bad_descriptors);
                self.muxer.reject_pkt(&hdr);
            }
        }
    }

    /// Fills RX buffers with whatever the device has for the guest. Returns whether the
    /// guest should be notified.
    pub fn process_rx<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, Error> {
        let mut used = false;
        loop {
            if queue.event_idx_enabled() {
                queue.disable_notification(mem)?;
            }
            let mut stuck = false;
            while self.muxer.has_rx_work() {
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                let head = chain.head_index();
                match self.rx_one(mem, chain) {
                    Some(len) => used |= self.add_used(mem, queue, head, len)?,
                    None => {
                        // Nothing to send after all: give the buffer back.
                        queue.go_to_previous_position();
                        stuck = true;
                        break;
                    }
                }
            }
            // Ask for a kick when buffers run out while work is left; a buffer that
            // arrived meanwhile is taken in the next round.
            let more_buffers = queue.event_idx_enabled() && queue.enable_notification(mem)?;
            if stuck || !self.muxer.has_rx_work() || !more_buffers {
                break;
            }
        }
        Ok(used && queue.needs_notification(mem)?)
    }

    /// Returns a chain to the guest. A head index beyond the queue (the guest wrote garbage
    /// in its available ring) is counted and skipped: there is no used slot to return.
    fn add_used<M: GuestMemory>(
        &self,
        mem: &M,
        queue: &mut Queue,
        head: u16,
        len: u32,
    ) -> Result<bool, Error> {
        match queue.add_used(mem, head, len) {
            Ok(()) => Ok(true),
            Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                Metrics::inc(&self.metrics.bad_descriptors);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fills one RX chain: `Some(used_len)`, or `None` to hand the chain back unused.
    fn rx_one<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: virtio_queue::DescriptorChain<&M>,
    ) -> Option<u32> {
        let Some(buf) = RxBuf::new(mem, chain) else {
            Metrics::inc(&self.metrics.bad_descriptors);
            return Some(0);
        };
        let cap = buf.capacity();
        let (hdr, len) = self.muxer.next_rx(self.rx_data.get_mut(..cap)?)?;
        let data = self.rx_data.get(..len).unwrap_or_default();
        match buf.write(&hdr, data) {
            Ok(used) => {
                Metrics::inc(&self.metrics.rx_packets);
                Metrics::add(&self.metrics.rx_bytes, len as u64);
                Some(used)
            }
            Err(_) => {
                Metrics::inc(&self.metrics.bad_descriptors);
                self.muxer.rx_failed(&hdr);
                Some(0)
            }
        }
    }
}

impl AsRawFd for VsockDevice {
    /// An epoll fd, readable when [`VsockDevice::handle_event`] has work.
    fn as_raw_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }
}

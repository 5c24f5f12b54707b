//! Counters for the hot paths: plain relaxed atomics, read with [`Metrics::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one vsock device. Cheap to bump from the device thread, safe to read
/// from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) conns_opened: AtomicU64,
    pub(crate) conns_reset: AtomicU64,
    pub(crate) conns_closed: AtomicU64,
    pub(crate) control_dropped: AtomicU64,
    pub(crate) protocol_violations: AtomicU64,
    pub(crate) bad_descriptors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Packets the guest sent (TX queue), including ones dropped as malformed.
    pub tx_packets: u64,
    /// Payload bytes the guest sent.
    pub tx_bytes: u64,
    /// Packets delivered to the guest (RX queue).
    pub rx_packets: u64,
    /// Payload bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Connections established (both directions).
    pub conns_opened: u64,
    /// Connections torn down by a reset, sent or received.
    pub conns_reset: u64,
    /// Connections removed, for any reason.
    pub conns_closed: u64,
    /// Connection-less replies dropped because their queue was full.
    pub control_dropped: u64,
    /// Guest packets that broke the protocol (bad CID, credit overrun, wrong op for the state…).
    pub protocol_violations: u64,
    /// Descriptor chains that could not hold a packet (too short, outside guest memory…).
    pub bad_descriptors: u64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            tx_packets: r(&self.tx_packets),
            tx_bytes: r(&self.tx_bytes),
            rx_packets: r(&self.rx_packets),
            rx_bytes: r(&self.rx_bytes),
            conns_opened: r(&self.conns_opened),
            conns_reset: r(&self.conns_reset),
            conns_closed: r(&self.conns_closed),
            control_dropped: r(&self.control_dropped),
            protocol_violations: r(&self.protocol_violations),
            bad_descriptors: r(&self.bad_descriptors),
        }
    }
}

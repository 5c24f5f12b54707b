//! Host → guest: frames read from the tap go into the driver's RX chains, each after
//! a virtio-net header of our own (no offload metadata, `num_buffers` 1).
//!
//! The tap is read only while the driver has a chain to fill, so frames wait in the
//! kernel (and the tap's queue limit, not our memory, bounds them) while it has none.

use std::io::{ErrorKind, Write};
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE};
use virtio_queue::{Queue, QueueOwnedT, QueueT, Writer};
use vm_memory::GuestMemoryMmap;

use super::{add_used, pop, NetMetrics, Pass, Tap, ETH_HLEN, VNET_HDR_LEN};
use crate::devices::virtio::queue::{check_chain, ChainLimits};

/// The header every delivered frame gets: no flags, no GSO, `num_buffers` 1 (what a
/// VERSION_1 device without MRG_RXBUF must write).
const RX_HDR: [u8; VNET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// How reading the tap ended for one chain.
enum Fill {
    /// A frame went into the chain: bytes written, header included.
    Written(u32),
    /// The tap has nothing more (or failed): the chain goes back to the ring.
    TapDry,
    /// The budget ran out before a frame fit.
    Budget,
}

/// The tap side of RX: whether the tap may have frames (it is polled edge-triggered,
/// so this stays set until a read finds it empty) and the buffer frames are read into.
pub(super) struct TapReader<'a> {
    pub(super) tap: &'a Tap,
    pub(super) readable: &'a mut bool,
    /// Large enough for any frame the tap can hold (see [`Tap::read_frame`]).
    pub(super) buf: &'a mut [u8],
}

/// Fills the driver's RX chains (each within `limits`) with frames from the tap while
/// it has both, at most `budget` frames and chains.
pub(super) fn process(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    tap: TapReader<'_>,
    m: &NetMetrics,
    limits: ChainLimits,
    budget: usize,
) -> Result<Pass, virtio_queue::Error> {
    let TapReader { tap, readable, buf } = tap;
    let mut pass = Pass::default();
    let mut left = budget;
    while *readable {
        if left == 0 {
            pass.more = true;
            break;
        }
        let Some(chain) = pop(queue, mem, m)? else {
            // Out of buffers: ask for a kick when the driver posts more, unless it did
            // meanwhile. The tap waits; its frames stay in the kernel.
            if queue.enable_notification(mem)? {
                continue;
            }
            break;
        };
        left -= 1;
        let head = chain.head_index();
        let writer = check_chain(queue, &chain, limits)
            .ok()
            .and_then(|()| Writer::<()>::new(mem, chain).ok());
        let writer = match writer {
            Some(w) if w.available_bytes() >= VNET_HDR_LEN => w,
            _ => {
                NetMetrics::inc(&m.bad_descriptors);
                pass.used |= add_used(queue, mem, head, 0, m);
                continue;
            }
        };
        match fill(writer, tap, readable, buf, m, &mut left) {
            Fill::Written(len) => pass.used |= add_used(queue, mem, head, len, m),
            Fill::TapDry => queue.go_to_previous_position(),
            Fill::Budget => {
                queue.go_to_previous_position();
                pass.more = true;
                break;
            }
        }
    }
    Ok(pass)
}

/// Reads frames until one fits `writer` (dropping those that do not), and writes it.
fn fill(
    mut writer: Writer<'_>,
    tap: &Tap,
    readable: &mut bool,
    buf: &mut [u8],
    m: &NetMetrics,
    left: &mut usize,
) -> Fill {
    loop {
        let n = match tap.read_frame(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                *readable = false;
                return Fill::TapDry;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(error) => {
                // Not retried until the tap signals again, so a failing tap cannot spin
                // the thread.
                NetMetrics::count_first(&m.tap_errors, &error, "reading from the tap");
                *readable = false;
                return Fill::TapDry;
            }
        };
        let Some(frame) = deliverable(&buf[..n.min(buf.len())]) else {
            NetMetrics::inc(&m.rx_dropped);
            if consume(left) {
                continue;
            }
            return Fill::Budget;
        };
        if VNET_HDR_LEN + frame.len() > writer.available_bytes() {
            // Too big for this chain; the next frame may fit.
            NetMetrics::inc(&m.rx_dropped);
            if consume(left) {
                continue;
            }
            return Fill::Budget;
        }
        if writer.write_all(&RX_HDR).is_err() || writer.write_all(frame).is_err() {
            // Cannot happen: the chain was checked to lie in memory and to be large enough.
            NetMetrics::inc(&m.bad_descriptors);
            return Fill::Written(0);
        }
        NetMetrics::inc(&m.rx_packets);
        m.rx_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        return Fill::Written((VNET_HDR_LEN + frame.len()) as u32);
    }
}

/// Takes one unit of budget, if any is left.
fn consume(left: &mut usize) -> bool {
    match left.checked_sub(1) {
        Some(l) => {
            *left = l;
            true
        }
        None => false,
    }
}

/// The frame in what the tap returned, unless it is a runt or carries offload
/// metadata (which the tap, with offloads off, should never produce).
fn deliverable(read: &[u8]) -> Option<&[u8]> {
    let (hdr, frame) = read.split_at_checked(VNET_HDR_LEN)?;
    let needs_csum = u32::from(hdr[0]) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
    let gso = u32::from(hdr[1]) != VIRTIO_NET_HDR_GSO_NONE;
    (frame.len() >= ETH_HLEN && !needs_csum && !gso).then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_frames_are_delivered() {
        let mut read = vec![0u8; VNET_HDR_LEN + 60];
        read[VNET_HDR_LEN] = 0xaa;
        assert_eq!(deliverable(&read).map(|f| f[0]), Some(0xaa));
        // DATA_VALID (2) is harmless: the frame is whole; our header drops the flag.
        read[0] = 2;
        assert!(deliverable(&read).is_some());
        read[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        assert!(deliverable(&read).is_none());
        read[0] = 0;
        read[1] = 1; // GSO_TCPV4
        assert!(deliverable(&read).is_none());
        read[1] = 0;
        assert!(deliverable(&read[..VNET_HDR_LEN + ETH_HLEN - 1]).is_none());
        assert!(deliverable(&read[..VNET_HDR_LEN + ETH_HLEN]).is_some());
        assert!(deliverable(&read[..5]).is_none());
    }
}

//! Guest → host: each TX chain holds a virtio-net header and one Ethernet frame, in
//! any chain shape; both go to the tap in one write.

use std::io::Read;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueT, Reader};
use vm_memory::GuestMemoryMmap;

use super::{add_used, pop, NetMetrics, Pass, Tap, ETH_HLEN, MAX_TX_CHAIN_LEN, VNET_HDR_LEN};
use crate::devices::virtio::queue::{check_chain, ChainLimits};

/// What became of one chain.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Written to the tap: the frame's length.
    Frame(usize),
    /// Too long or too short for a frame, or refused by the tap.
    Dropped,
    /// Outside guest memory, refused by the chain limits, or without a whole header.
    Bad,
}

/// Sends the frames the guest queued, at most `budget` chains, each within `limits`.
/// `buf` holds [`MAX_TX_CHAIN_LEN`] bytes.
pub(super) fn process(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    tap: &Tap,
    buf: &mut [u8],
    m: &NetMetrics,
    limits: ChainLimits,
    budget: usize,
) -> Result<Pass, virtio_queue::Error> {
    let mut pass = Pass::default();
    let mut left = budget;
    loop {
        while left > 0 {
            let Some(chain) = pop(queue, mem, m)? else {
                break;
            };
            left -= 1;
            let head = chain.head_index();
            let sent = match check_chain(queue, &chain, limits) {
                Ok(()) => send(mem, chain, tap, buf, m),
                Err(_) => Sent::Bad,
            };
            match sent {
                Sent::Frame(len) => {
                    NetMetrics::inc(&m.tx_packets);
                    m.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                Sent::Dropped => NetMetrics::inc(&m.tx_dropped),
                Sent::Bad => NetMetrics::inc(&m.bad_descriptors),
            }
            // A TX chain is returned with nothing written to it.
            pass.used |= add_used(queue, mem, head, 0, m);
        }
        if left == 0 {
            pass.more = true;
            return Ok(pass);
        }
        // Drained: ask for a kick on the next chain, unless one came meanwhile.
        if !queue.enable_notification(mem)? {
            return Ok(pass);
        }
    }
}

fn send(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    tap: &Tap,
    buf: &mut [u8],
    m: &NetMetrics,
) -> Sent {
    let Ok(mut reader) = Reader::<()>::new(mem, chain) else {
        return Sent::Bad;
    };
    let len = reader.available_bytes();
    if len < VNET_HDR_LEN {
        return Sent::Bad;
    }
    if !(VNET_HDR_LEN + ETH_HLEN..=MAX_TX_CHAIN_LEN).contains(&len) {
        return Sent::Dropped;
    }
    let Some(chain_bytes) = buf.get_mut(..len) else {
        return Sent::Dropped;
    };
    if reader.read_exact(chain_bytes).is_err() {
        return Sent::Bad;
    }
    // No offload was negotiated, so the header carries nothing: the tap gets a zeroed
    // one rather than whatever checksum or GSO request the guest wrote.
    chain_bytes[..VNET_HDR_LEN].fill(0);
    match tap.write_frame(chain_bytes) {
        Ok(n) if n == len => Sent::Frame(len - VNET_HDR_LEN),
        Ok(n) => {
            let error = format!("short write: {n} of {len} bytes");
            NetMetrics::count_first(&m.tap_errors, &error, "writing to the tap");
            Sent::Dropped
        }
        Err(error) => {
            NetMetrics::count_first(&m.tap_errors, &error, "writing to the tap");
            Sent::Dropped
        }
    }
}

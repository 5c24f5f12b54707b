//! Guest garbage against the real queue code and a real tap: descriptor tables and
//! available rings from proptest. Nothing panics, every TX chain is counted exactly
//! once, every frame read from the tap is delivered or counted as dropped, and used
//! lengths are only ever what was delivered.
//!
//! The garbage buffers point anywhere in (and beyond) the low megabyte of guest
//! memory. Where the rings lie there too, RX frames may land on them — the guest told
//! the device to write there — and rewrite the available index (the ring is then
//! broken) or the used ring the checks read. So the rings normally lie out of the
//! buffers' reach, and only in "scribble" cases within it, where the checks are the
//! ones that hold whatever the device overwrote.

use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use virtio_queue::desc::split::Descriptor as RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::super::rx::TapReader;
use super::super::{
    rx, tx, NetMetrics, Tap, BUDGET, MAX_CHAIN_DESCRIPTORS, MAX_TX_CHAIN_LEN, QUEUE_SIZE,
};
use super::frames::{eth, ETH_P_TEST};
use super::host::{private_netns, tap_up, unique_tap, wait_for, PacketSocket};
use super::{GUEST_MAC, OTHER_MAC};
use crate::devices::virtio::queue::{write_field, ChainLimits, QueueField};

const SIZE: u16 = 16;
/// The memory the garbage buffers point into (and 128 KiB beyond it).
const MEM_SIZE: u64 = 1 << 20;
/// Where the TX ring lies (the RX ring follows at `+ RX_OFFSET`): far beyond any
/// buffer's reach (at most `MEM_SIZE + 0x2_0000 + 70_000`), in a region of its own...
const RINGS_AWAY: u64 = 16 << 20;
/// ... or, in scribble cases, among the buffers.
const RINGS_AMONG_BUFFERS: u64 = 0x1000;
const RX_OFFSET: u64 = 0x4000;
const RINGS_LEN: u64 = 0x8000;
/// The device's limits: INDIRECT_DESC is not offered.
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: MAX_CHAIN_DESCRIPTORS,
    indirect: false,
};

/// One descriptor: address (some beyond memory), length (some over the TX limit
/// when summed), flags (NEXT, WRITE, INDIRECT in any mix), next (some out of range).
fn descriptor() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (
        0u64..MEM_SIZE + 0x2_0000,
        prop_oneof![0u32..64, 0u32..4096, 30_000u32..70_000],
        0u16..8,
        0u16..SIZE + 4,
    )
}

fn queue(mem: &GuestMemoryMmap, ring: u64, event_idx: bool) -> Queue {
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    write_field(&mut q, QueueField::Size, u32::from(SIZE)).unwrap();
    write_field(&mut q, QueueField::DescLow, ring as u32).unwrap();
    write_field(&mut q, QueueField::DriverLow, (ring + 0x1000) as u32).unwrap();
    write_field(&mut q, QueueField::DeviceLow, (ring + 0x2000) as u32).unwrap();
    q.set_ready(true);
    q.set_event_idx(event_idx);
    assert!(q.is_valid(mem));
    q
}

/// Writes the table and the available ring of the queue at `ring`.
fn lay_out(
    mem: &GuestMemoryMmap,
    ring: u64,
    descs: &[(u64, u32, u16, u16)],
    heads: &[u16],
    idx: u16,
) {
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        let d = RawDescriptor::new(addr, len, flags, next);
        mem.write_obj(d, GuestAddress(ring + 16 * i as u64))
            .unwrap();
    }
    for (i, head) in heads.iter().enumerate() {
        mem.write_obj(*head, GuestAddress(ring + 0x1000 + 4 + 2 * i as u64))
            .unwrap();
    }
    mem.write_obj(idx, GuestAddress(ring + 0x1000 + 2)).unwrap();
}

/// Used elements of the queue at `ring`: (id, len).
fn used(mem: &GuestMemoryMmap, ring: u64) -> Vec<(u32, u32)> {
    let idx: u16 = mem.read_obj(GuestAddress(ring + 0x2000 + 2)).unwrap();
    (0..u64::from(idx))
        .map(|n| {
            let at = ring + 0x2000 + 4 + 8 * n;
            let id = mem.read_obj(GuestAddress(at)).unwrap();
            let len = mem.read_obj(GuestAddress(at + 4)).unwrap();
            (id, len)
        })
        .collect()
}

/// Reads whatever frames are left in the tap.
fn drain(tap: &Tap, buf: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        match tap.read_frame(buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("reading the tap: {e}"),
        }
    }
}

#[test]
fn garbage_rings_are_counted_never_fatal() {
    if !private_netns("net garbage rings") {
        return;
    }
    let name = unique_tap();
    let tap = Tap::open(&name).unwrap();
    tap_up(&name, None);
    let sock = PacketSocket::bind(&name);

    let strategy = (
        prop::collection::vec(descriptor(), usize::from(SIZE)),
        prop::collection::vec(0u16..SIZE + 4, usize::from(SIZE)),
        0u16..SIZE + 4,
        prop::collection::vec(0usize..=1500, 0..4),
        any::<bool>(),
        prop::bool::weighted(0.25),
    );
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &strategy,
            |(descs, heads, idx, frame_lens, event_idx, scribble)| {
                let rings = if scribble {
                    RINGS_AMONG_BUFFERS
                } else {
                    RINGS_AWAY
                };
                let (tx_ring, rx_ring) = (rings, rings + RX_OFFSET);
                let mem = GuestMemoryMmap::<()>::from_ranges(&[
                    (GuestAddress(0), MEM_SIZE as usize),
                    (GuestAddress(RINGS_AWAY), RINGS_LEN as usize),
                ])
                .unwrap();
                let mut tx_buf = vec![0u8; MAX_TX_CHAIN_LEN];
                let mut rx_buf = vec![0u8; 1 << 17];
                // Whatever a failed case before this one left in the tap.
                drain(&tap, &mut rx_buf);
                let m = NetMetrics::default();
                let broken = idx > SIZE;
                let valid_heads = heads[..usize::from(idx.min(SIZE))]
                    .iter()
                    .filter(|h| **h < SIZE)
                    .count();

                // TX: each chain ends as a packet, a drop or a bad descriptor; once. TX
                // writes nothing but its used ring, so this holds in scribble cases too.
                lay_out(&mem, tx_ring, &descs, &heads, idx);
                let mut txq = queue(&mem, tx_ring, event_idx);
                let sent = tx::process(&mut txq, &mem, &tap, &mut tx_buf, &m, LIMITS, BUDGET);
                prop_assert_eq!(sent.is_err(), broken);
                let counted = m.tx_packets.load(Relaxed)
                    + m.tx_dropped.load(Relaxed)
                    + m.bad_descriptors.load(Relaxed);
                let tx_used = used(&mem, tx_ring);
                if !broken {
                    prop_assert_eq!(counted, u64::from(idx));
                    prop_assert_eq!(tx_used.len(), valid_heads);
                }
                prop_assert!(tx_used
                    .iter()
                    .all(|&(id, len)| id < u32::from(SIZE) && len == 0));
                prop_assert_eq!(m.tap_errors.load(Relaxed), 0);

                // RX: frames from the host into the same garbage.
                let frames: Vec<Vec<u8>> = frame_lens
                    .iter()
                    .map(|&l| eth(GUEST_MAC, OTHER_MAC, ETH_P_TEST, &vec![0x5a; l]))
                    .collect();
                for f in &frames {
                    sock.send(f);
                }
                let m = NetMetrics::default();
                lay_out(&mem, rx_ring, &descs, &heads, idx);
                let mut rxq = queue(&mem, rx_ring, event_idx);
                let mut readable = true;
                let reader = TapReader {
                    tap: &tap,
                    readable: &mut readable,
                    buf: &mut rx_buf,
                };
                let received = rx::process(&mut rxq, &mem, reader, &m, LIMITS, BUDGET);
                if !scribble {
                    prop_assert_eq!(received.is_err(), broken);
                    let rx_used = used(&mem, rx_ring);
                    prop_assert!(rx_used.len() <= valid_heads);
                    for &(id, len) in &rx_used {
                        prop_assert!(id < u32::from(SIZE));
                        let delivered = frames.iter().any(|f| f.len() + 12 == len as usize);
                        prop_assert!(len == 0 || delivered, "used length {}", len);
                    }
                    let delivered = rx_used.iter().filter(|u| u.1 != 0).count() as u64;
                    prop_assert_eq!(m.rx_packets.load(Relaxed), delivered);
                }
                // Every frame sent was delivered, dropped, or is still in the tap.
                let mut left = 0;
                let taken = m.rx_packets.load(Relaxed) + m.rx_dropped.load(Relaxed);
                wait_for("the frames to be accounted for", || {
                    left += drain(&tap, &mut rx_buf);
                    taken + left as u64 >= frames.len() as u64
                });
                prop_assert_eq!(taken + left as u64, frames.len() as u64);
                Ok(())
            },
        )
        .unwrap();
}

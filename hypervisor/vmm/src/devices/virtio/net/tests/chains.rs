//! Chain limits on the real queue code and a real tap: chains through an indirect
//! table (VIRTIO_RING_F_INDIRECT_DESC is not offered, but virtio-queue's walker would
//! follow one, up to 65 535 descriptors a chain) and chains over
//! [`MAX_CHAIN_DESCRIPTORS`] are refused before their buffers are walked, and counted.

use std::sync::atomic::Ordering::Relaxed;

use virtio_queue::desc::split::Descriptor as RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::super::rx::TapReader;
use super::super::{
    rx, tx, NetMetrics, Tap, BUDGET, MAX_CHAIN_DESCRIPTORS, MAX_TX_CHAIN_LEN, QUEUE_SIZE,
    VNET_HDR_LEN,
};
use super::frames::{eth, ETH_P_TEST};
use super::host::{private_netns, tap_up, unique_tap, wait_for, PacketSocket};
use super::{GUEST_MAC, OTHER_MAC};
use crate::devices::virtio::queue::{write_field, ChainLimits, QueueField};

const RING: u64 = 0x1000;
/// A 64-byte frame after a zero header.
const FRAME: u64 = 0x8000;
const FRAME_LEN: u32 = (VNET_HDR_LEN + 64) as u32;
/// An RX buffer.
const RX_BUF: u64 = 0x9000;
/// The indirect table.
const TABLE: u64 = 0x10_0000;
/// The most descriptors an indirect table holds.
const TABLE_MAX: u16 = u16::MAX;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: MAX_CHAIN_DESCRIPTORS,
    indirect: false,
};

fn desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    mem.write_obj(RawDescriptor::new(addr, len, flags, next), GuestAddress(at))
        .unwrap();
}

/// A fresh queue of [`QUEUE_SIZE`] at [`RING`] offering `heads`.
fn offer(mem: &GuestMemoryMmap, heads: &[u16]) -> Queue {
    mem.write_slice(&[0u8; 0x3000], GuestAddress(RING + 0x1000))
        .unwrap();
    for (i, head) in heads.iter().enumerate() {
        mem.write_obj(*head, GuestAddress(RING + 0x1004 + 2 * i as u64))
            .unwrap();
    }
    mem.write_obj(heads.len() as u16, GuestAddress(RING + 0x1002))
        .unwrap();
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    write_field(&mut q, QueueField::Size, u32::from(QUEUE_SIZE)).unwrap();
    write_field(&mut q, QueueField::DescLow, RING as u32).unwrap();
    write_field(&mut q, QueueField::DriverLow, (RING + 0x1000) as u32).unwrap();
    write_field(&mut q, QueueField::DeviceLow, (RING + 0x3000) as u32).unwrap();
    q.set_ready(true);
    assert!(q.is_valid(mem));
    q
}

/// Used element `n`: (id, len).
fn used(mem: &GuestMemoryMmap, n: u64) -> (u32, u32) {
    let at = RING + 0x3004 + 8 * n;
    (
        mem.read_obj(GuestAddress(at)).unwrap(),
        mem.read_obj(GuestAddress(at + 4)).unwrap(),
    )
}

fn used_idx(mem: &GuestMemoryMmap) -> u16 {
    mem.read_obj(GuestAddress(RING + 0x3002)).unwrap()
}

/// The longest indirect table: `first` (address, length, flags), then zero-length
/// descriptors with `flags`, all chained.
fn longest_table(mem: &GuestMemoryMmap, first: (u64, u32, u16), flags: u16) {
    let (addr, len, first_flags) = first;
    desc(mem, TABLE, addr, len, first_flags | F_NEXT, 1);
    for i in 1..TABLE_MAX {
        let next = if i + 1 < TABLE_MAX { F_NEXT } else { 0 };
        desc(mem, TABLE + 16 * u64::from(i), addr, 0, flags | next, i + 1);
    }
}

#[test]
fn indirect_and_overlong_chains_are_refused_and_counted() {
    if !private_netns("net chain limits") {
        return;
    }
    let name = unique_tap();
    let tap = Tap::open(&name).unwrap();
    tap_up(&name, None);
    let sock = PacketSocket::bind(&name);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
    let frame = eth(OTHER_MAC, GUEST_MAC, ETH_P_TEST, &[0x5a; 50]);
    let mut chain = vec![0u8; VNET_HDR_LEN];
    chain.extend_from_slice(&frame);
    chain.resize(FRAME_LEN as usize, 0);
    mem.write_slice(&chain, GuestAddress(FRAME)).unwrap();
    let mut tx_buf = vec![0u8; MAX_TX_CHAIN_LEN];

    // TX, a whole budget of chains each straight into the longest table, whose first
    // descriptor holds a good frame: all refused, none walked (walking them all would
    // take the thread ~65 535 descriptor reads a chain).
    longest_table(&mem, (FRAME, FRAME_LEN, 0), 0);
    for i in 0..QUEUE_SIZE {
        desc(
            &mem,
            RING + 16 * u64::from(i),
            TABLE,
            16 * u32::from(TABLE_MAX),
            F_INDIRECT,
            0,
        );
    }
    let heads: Vec<u16> = (0..QUEUE_SIZE).collect();
    assert_eq!(usize::from(QUEUE_SIZE), BUDGET);
    let m = NetMetrics::default();
    let mut q = offer(&mem, &heads);
    tx::process(&mut q, &mem, &tap, &mut tx_buf, &m, LIMITS, BUDGET).unwrap();
    assert_eq!(used_idx(&mem), QUEUE_SIZE);
    assert!((0..u64::from(QUEUE_SIZE)).all(|n| used(&mem, n) == (n as u32, 0)));
    assert_eq!(m.bad_descriptors.load(Relaxed), u64::from(QUEUE_SIZE));
    assert_eq!(m.tx_packets.load(Relaxed), 0);

    // TX, direct chains: the frame then zero-length descriptors, one over the cap
    // (refused) and exactly at it (sent).
    let m = NetMetrics::default();
    let direct = |start: u16, n: u16| {
        for i in 0..n {
            let (len, flags) = if i + 1 < n { (0, F_NEXT) } else { (0, 0) };
            let len = if i == 0 { FRAME_LEN } else { len };
            let at = RING + 16 * u64::from(start + i);
            desc(&mem, at, FRAME, len, flags, start + i + 1);
        }
    };
    let over = MAX_CHAIN_DESCRIPTORS as u16 + 1;
    direct(0, over);
    direct(over, over - 1);
    let mut q = offer(&mem, &[0, over]);
    tx::process(&mut q, &mem, &tap, &mut tx_buf, &m, LIMITS, BUDGET).unwrap();
    assert_eq!(used_idx(&mem), 2);
    assert_eq!(m.bad_descriptors.load(Relaxed), 1);
    assert_eq!(m.tx_packets.load(Relaxed), 1);

    // RX: a frame waits; a chain through a table whose first buffer would hold it is
    // refused and the frame stays in the tap, for the direct chain after it.
    sock.send(&frame);
    longest_table(&mem, (RX_BUF, 2048, F_WRITE), F_WRITE);
    desc(&mem, RING, TABLE, 16 * u32::from(TABLE_MAX), F_INDIRECT, 0);
    desc(&mem, RING + 16, RX_BUF, 2048, F_WRITE, 0);
    let m = NetMetrics::default();
    let mut q = offer(&mem, &[0, 1]);
    let mut rx_buf = vec![0u8; 1 << 17];
    let mut received = 0;
    wait_for("the frame to reach the guest", || {
        let mut readable = true;
        let reader = TapReader {
            tap: &tap,
            readable: &mut readable,
            buf: &mut rx_buf,
        };
        rx::process(&mut q, &mem, reader, &m, LIMITS, BUDGET).unwrap();
        received = used_idx(&mem);
        received == 2
    });
    assert_eq!(used(&mem, 0), (0, 0));
    assert_eq!(used(&mem, 1), (1, (VNET_HDR_LEN + frame.len()) as u32));
    assert_eq!(m.bad_descriptors.load(Relaxed), 1);
    assert_eq!(m.rx_packets.load(Relaxed), 1);
}

//! A fake guest driver: real split virtqueues in guest memory, buffers posted and reaped
//! from the driver side, and helpers to run the device until something happens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::proto::{Header, Op, HEADER_SIZE, HOST_CID, TYPE_STREAM};
use crate::VsockDevice;

pub(crate) const GUEST_CID: u64 = 3;
pub(crate) const QUEUE_SIZE: u16 = 64;
pub(crate) const MEM_SIZE: usize = 32 << 20;
/// Bytes of guest memory behind each descriptor index.
const SLOT: u64 = 0x11000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x100_0000;
/// Payload room of a default RX buffer (Linux uses 4 KiB).
pub(crate) const RX_DATA: u32 = 4096;

/// A chain's descriptors as (guest address, length).
type Chain = Vec<(u64, u32)>;

/// The driver side of one split queue.
pub(crate) struct Ring {
    pub(crate) desc: GuestAddress,
    pub(crate) avail: GuestAddress,
    pub(crate) used: GuestAddress,
    bufs: u64,
    avail_idx: u16,
    used_seen: u16,
    free: Vec<u16>,
    /// Head → the chain's (addr, len) descriptors.
    in_flight: HashMap<u16, Chain>,
}

impl Ring {
    fn new(at: u64, bufs: u64) -> (Ring, Queue) {
        // Laid out by hand: `MockSplitQueue` puts the used ring right after the first
        // `size` *bytes* of the available ring's entries (which take 2 bytes each), so the
        // two overlap once a driver writes past the middle of the available ring.
        let size = u64::from(QUEUE_SIZE);
        let desc = GuestAddress(at);
        let avail = GuestAddress(at + 16 * size);
        let used = GuestAddress((avail.0 + 6 + 2 * size + 3) & !3);
        let mut queue = Queue::new(QUEUE_SIZE).unwrap();
        queue.set_size(QUEUE_SIZE);
        queue.set_desc_table_address(Some(desc.0 as u32), Some((desc.0 >> 32) as u32));
        queue.set_avail_ring_address(Some(avail.0 as u32), Some((avail.0 >> 32) as u32));
        queue.set_used_ring_address(Some(used.0 as u32), Some((used.0 >> 32) as u32));
        queue.set_ready(true);
        let ring = Ring {
            desc,
            avail,
            used,
            bufs,
            avail_idx: 0,
            used_seen: 0,
            free: (0..QUEUE_SIZE).rev().collect(),
            in_flight: HashMap::new(),
        };
        (ring, queue)
    }

    fn slot(&self, idx: u16) -> u64 {
        self.bufs + u64::from(idx) * SLOT
    }

    /// Writes a raw descriptor at `idx`.
    pub(crate) fn write_desc(&self, mem: &GuestMemoryMmap, idx: u16, d: Descriptor) {
        mem.write_obj(
            RawDescriptor::from(d),
            self.desc.unchecked_add(16 * u64::from(idx)),
        )
        .unwrap();
    }

    /// Makes `head` available to the device.
    pub(crate) fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.avail_idx % QUEUE_SIZE);
        mem.write_obj(head, self.avail.unchecked_add(4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, self.avail.unchecked_add(2))
            .unwrap();
    }

    /// Builds a chain with one descriptor per length in `lens`, each over its own slot.
    fn post(&mut self, mem: &GuestMemoryMmap, lens: &[u32], flags: u16) -> Option<u16> {
        if self.free.len() < lens.len() {
            return None;
        }
        let idxs: Vec<u16> = (0..lens.len()).filter_map(|_| self.free.pop()).collect();
        let mut chain = vec![];
        for (i, (&idx, &len)) in idxs.iter().zip(lens).enumerate() {
            let last = i + 1 == idxs.len();
            let next = if last { 0 } else { idxs[i + 1] };
            let f = flags | if last { 0 } else { VRING_DESC_F_NEXT as u16 };
            self.write_desc(mem, idx, Descriptor::new(self.slot(idx), len, f, next));
            chain.push((self.slot(idx), len));
        }
        self.in_flight.insert(idxs[0], chain);
        self.publish(mem, idxs[0]);
        Some(idxs[0])
    }

    /// Used entries since the last call: (head, used len, the chain).
    fn reap(&mut self, mem: &GuestMemoryMmap) -> Vec<(u16, u32, Chain)> {
        let idx: u16 = mem.read_obj(self.used.unchecked_add(2)).unwrap();
        let mut out = vec![];
        while self.used_seen != idx {
            let at = self
                .used
                .unchecked_add(4 + 8 * u64::from(self.used_seen % QUEUE_SIZE));
            let id: u32 = mem.read_obj(at).unwrap();
            let len: u32 = mem.read_obj(at.unchecked_add(4)).unwrap();
            self.used_seen = self.used_seen.wrapping_add(1);
            let head = id as u16;
            let chain = self.in_flight.remove(&head).unwrap_or_default();
            // Return the chain's descriptors to the free list (in chain order).
            let mut d = head;
            for _ in 0..chain.len() {
                self.free.push(d);
                let raw: RawDescriptor = mem
                    .read_obj(self.desc.unchecked_add(16 * u64::from(d)))
                    .unwrap();
                d = Descriptor::from(raw).next();
            }
            out.push((head, len, chain));
        }
        out
    }
}

/// A guest with an RX and a TX queue.
pub(crate) struct FakeGuest {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
    pub(crate) rx_ring: Ring,
    pub(crate) tx_ring: Ring,
    /// Packets received and not yet taken by a test.
    pub(crate) inbox: Vec<(Header, Vec<u8>)>,
}

impl FakeGuest {
    pub(crate) fn new() -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (rx_ring, rx) = Ring::new(0, RX_BUFS);
        let (tx_ring, tx) = Ring::new(0x4000, TX_BUFS);
        FakeGuest {
            mem,
            rx,
            tx,
            rx_ring,
            tx_ring,
            inbox: vec![],
        }
    }

    /// A header from the guest to the host.
    pub(crate) fn hdr(op: Op, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op: op.to_u16(),
            buf_alloc: 256 * 1024,
            ..Header::default()
        }
    }

    /// Queues a packet on TX as (header, payload) descriptors, Linux < 6.2 style.
    pub(crate) fn send(&mut self, hdr: Header, data: &[u8]) {
        let lens: Vec<usize> = if data.is_empty() {
            vec![HEADER_SIZE]
        } else {
            vec![HEADER_SIZE, data.len()]
        };
        self.send_shaped(hdr, data, &lens);
    }

    /// Queues a packet on TX split into descriptors of the given lengths (which must add
    /// up to at least 44 + payload).
    pub(crate) fn send_shaped(&mut self, mut hdr: Header, data: &[u8], lens: &[usize]) {
        if hdr.op() == Some(Op::Rw) {
            hdr.len = data.len() as u32;
        }
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        self.reap_tx();
        let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        let head = self
            .tx_ring
            .post(&self.mem, &lens32, 0)
            .expect("TX ring full");
        let chain = self.tx_ring.in_flight[&head].clone();
        let mut off = 0;
        for (addr, len) in chain {
            let end = (off + len as usize).min(bytes.len());
            self.mem
                .write_slice(&bytes[off..end], GuestAddress(addr))
                .unwrap();
            off = end;
        }
    }

    pub(crate) fn reap_tx(&mut self) {
        self.tx_ring.reap(&self.mem);
    }

    /// Posts `n` RX buffers of `44 + RX_DATA` bytes, alternating one- and two-descriptor
    /// chains (Linux ≥ 6.2 and older).
    pub(crate) fn post_rx(&mut self, n: usize) {
        for i in 0..n {
            let lens: &[u32] = if i % 2 == 0 {
                &[HEADER_SIZE as u32 + RX_DATA]
            } else {
                &[HEADER_SIZE as u32, RX_DATA]
            };
            if self
                .rx_ring
                .post(&self.mem, lens, VRING_DESC_F_WRITE as u16)
                .is_none()
            {
                break;
            }
        }
    }

    /// RX buffers currently posted.
    pub(crate) fn rx_posted(&self) -> usize {
        self.rx_ring.in_flight.len()
    }

    /// Moves used RX buffers into `inbox`.
    pub(crate) fn reap_rx(&mut self) {
        for (_, len, chain) in self.rx_ring.reap(&self.mem) {
            let mut bytes = vec![];
            for (addr, dlen) in chain {
                let mut b = vec![0u8; dlen as usize];
                self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
                bytes.extend(b);
            }
            bytes.truncate(len as usize);
            if bytes.len() < HEADER_SIZE {
                continue;
            }
            let hdr = Header::from_bytes(bytes[..HEADER_SIZE].try_into().unwrap());
            assert_eq!(
                hdr.len as usize,
                bytes.len() - HEADER_SIZE,
                "used len matches header"
            );
            self.inbox.push((hdr, bytes[HEADER_SIZE..].to_vec()));
        }
    }

    /// One round: host events, then both queues, then reap.
    pub(crate) fn step(&mut self, dev: &mut VsockDevice) {
        dev.handle_event().unwrap();
        dev.process_queues(&self.mem, Some(&mut self.rx), Some(&mut self.tx))
            .unwrap();
        self.reap_rx();
        self.reap_tx();
        if self.rx_posted() < 16 {
            self.post_rx(32);
        }
    }

    /// Steps until `done` holds (or panics after 5 s).
    pub(crate) fn run_until(
        &mut self,
        dev: &mut VsockDevice,
        mut done: impl FnMut(&mut FakeGuest, &mut VsockDevice) -> bool,
    ) {
        let start = Instant::now();
        loop {
            self.step(dev);
            if done(self, dev) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out; inbox: {:?}",
                self.inbox
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Steps for `d` regardless.
    pub(crate) fn run_for(&mut self, dev: &mut VsockDevice, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.step(dev);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for a packet matching `pred`, removes and returns it.
    pub(crate) fn expect(
        &mut self,
        dev: &mut VsockDevice,
        mut pred: impl FnMut(&Header) -> bool,
    ) -> (Header, Vec<u8>) {
        let mut found = None;
        self.run_until(dev, |g, _| {
            if let Some(i) = g.inbox.iter().position(|(h, _)| pred(h)) {
                found = Some(g.inbox.remove(i));
                true
            } else {
                false
            }
        });
        found.unwrap()
    }

    /// Waits for a packet with `op` on the connection (`host_port` → `guest_port`).
    pub(crate) fn expect_op(
        &mut self,
        dev: &mut VsockDevice,
        op: Op,
        host_port: u32,
        guest_port: u32,
    ) -> (Header, Vec<u8>) {
        self.expect(dev, |h| {
            h.op() == Some(op) && h.src_port == host_port && h.dst_port == guest_port
        })
    }
}

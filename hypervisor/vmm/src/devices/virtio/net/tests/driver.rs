//! A driver in the test: it writes the transport's registers and lays out split
//! queues, chains and buffers in real guest memory, as a guest would.

use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::super::{Net, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN};
use crate::devices::virtio::test_utils::{self, r32, w32};
use crate::devices::virtio::MmioTransport;

/// Entries per queue.
pub const SIZE: u16 = 64;
/// Guest memory.
pub const MEM_SIZE: u64 = 4 << 20;
/// RX buffers: one 4 KiB page per descriptor index.
const RX_BUFS: u64 = 0x10_0000;
/// Where frames to send are written (room for the largest chain and then some).
pub const TX_BUF: u64 = 0x20_0000;
/// An RX buffer's default size: a header and a 1514-byte frame, rounded up.
pub const RX_BUF_LEN: u32 = 2048;
/// What the device writes before each frame.
pub const RX_HDR: [u8; VNET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// Everything the device offers.
pub const ALL_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS)
    | (1 << VIRTIO_RING_F_EVENT_IDX);

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// Queue `q`'s descriptor table; its available and used rings follow a page apart.
pub fn queue_base(q: usize) -> u64 {
    0x1_0000 * (q as u64 + 1)
}

/// One descriptor of a chain to post.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

impl Buf {
    pub fn read(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            write: false,
        }
    }

    pub fn write(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            write: true,
        }
    }
}

pub struct Driver {
    pub t: MmioTransport,
    pub mem: GuestMemoryMmap,
    pub irq: EventFd,
    next_desc: [u16; 2],
    avail: [u16; 2],
    seen_used: [u16; 2],
}

impl Driver {
    pub fn new(net: Net) -> Driver {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let (t, irq) = test_utils::transport(net, mem.clone());
        Driver {
            t,
            mem,
            irq,
            next_desc: [0; 2],
            avail: [0; 2],
            seen_used: [0; 2],
        }
    }

    pub fn w(&mut self, reg: u32, v: u32) {
        w32(&mut self.t, reg, v);
    }

    pub fn r(&mut self, reg: u32) -> u32 {
        r32(&mut self.t, reg)
    }

    pub fn device_features(&mut self) -> u64 {
        test_utils::device_features(&mut self.t)
    }

    /// Config space bytes `0..len`.
    pub fn config(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                let mut b = [0u8];
                crate::devices::BusDevice::read(
                    &mut self.t,
                    crate::devices::virtio::mmio::CONFIG_SPACE_OFFSET + i as u64,
                    &mut b,
                );
                b[0]
            })
            .collect()
    }

    /// Reset, features, both queues of [`SIZE`] entries; DRIVER_OK is left to the test.
    pub fn initialize(&mut self, features: u64) {
        test_utils::negotiate(&mut self.t, features);
        assert_eq!(self.r(VIRTIO_MMIO_STATUS), 0xb, "FEATURES_OK accepted");
        for q in [RX_QUEUE, TX_QUEUE] {
            // Fresh rings: no stale indices from before a reset.
            let zero = vec![0u8; 0x3000];
            self.mem
                .write_slice(&zero, GuestAddress(queue_base(q)))
                .unwrap();
            test_utils::setup_queue(&mut self.t, q as u32, QUEUE_SIZE, SIZE, queue_base(q));
        }
        self.next_desc = [0; 2];
        self.avail = [0; 2];
        self.seen_used = [0; 2];
    }

    pub fn driver_ok(&mut self) {
        self.w(VIRTIO_MMIO_STATUS, 0xf);
        assert!(self.t.is_activated());
    }

    /// Writes `bufs` as one chain into queue `q`'s table and makes it available;
    /// returns its head.
    pub fn post(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let table = queue_base(q);
        let head = self.next_desc[q] % SIZE;
        for (i, b) in bufs.iter().enumerate() {
            let index = self.next_desc[q] % SIZE;
            self.next_desc[q] = self.next_desc[q].wrapping_add(1);
            let next = self.next_desc[q] % SIZE;
            let mut flags = if b.write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let at = table + 16 * u64::from(index);
            self.mem.write_obj(b.addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(b.len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        self.publish(q, head);
        head
    }

    /// Makes `head` available on queue `q`.
    pub fn publish(&mut self, q: usize, head: u16) {
        let avail = queue_base(q) + 0x1000;
        test_utils::publish(&self.mem, avail, SIZE, &mut self.avail[q], head);
    }

    pub fn kick(&mut self, q: usize) {
        self.w(VIRTIO_MMIO_QUEUE_NOTIFY, q as u32);
    }

    /// Posts `n` RX buffers of `len` bytes, each at its descriptor's own page.
    pub fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            let index = self.next_desc[RX_QUEUE] % SIZE;
            let addr = RX_BUFS + 0x1000 * u64::from(index);
            self.post(RX_QUEUE, &[Buf::write(addr, len.min(0x1000))]);
        }
        self.kick(RX_QUEUE);
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(queue_base(q) + 0x2000 + 2))
            .unwrap()
    }

    /// Used element `n` (counted from the start) of queue `q`: (id, len).
    pub fn used(&self, q: usize, n: u16) -> (u32, u32) {
        let at = queue_base(q) + 0x2000 + 4 + 8 * u64::from(n % SIZE);
        let id = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    /// Waits until queue `q`'s used index reaches `idx`.
    pub fn wait_used(&self, q: usize, idx: u16) {
        super::host::wait_for(&format!("queue {q} used index {idx}"), || {
            self.used_idx(q) == idx
        });
    }

    /// Marks the next `n` used RX elements as seen (the test checked them itself).
    pub fn skip_rx(&mut self, n: u16) {
        self.seen_used[RX_QUEUE] = self.seen_used[RX_QUEUE].wrapping_add(n);
    }

    /// The next used RX element, waiting for it: the head and the bytes written.
    pub fn next_rx(&mut self) -> (u16, Vec<u8>) {
        let n = self.seen_used[RX_QUEUE];
        super::host::wait_for("a used RX buffer", || self.used_idx(RX_QUEUE) != n);
        self.seen_used[RX_QUEUE] = n.wrapping_add(1);
        let (id, len) = self.used(RX_QUEUE, n);
        let head = u16::try_from(id).unwrap();
        let addr: u64 = self
            .mem
            .read_obj(GuestAddress(queue_base(RX_QUEUE) + 16 * u64::from(head)))
            .unwrap();
        let mut bytes = vec![0u8; len as usize];
        self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        (head, bytes)
    }

    /// The next frame for which `want` holds, skipping others; each buffer used is
    /// posted again.
    pub fn recv(&mut self, what: &str, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no {what} arrived");
            let (_, bytes) = self.next_rx();
            self.post_rx(1, RX_BUF_LEN);
            let (hdr, frame) = bytes.split_at(VNET_HDR_LEN);
            assert_eq!(hdr, RX_HDR, "the device's header");
            if want(frame) {
                return frame.to_vec();
            }
        }
    }

    /// Sends `frame` (after a zero header) in one descriptor and waits for the device
    /// to take it.
    pub fn send(&mut self, frame: &[u8]) {
        let mut chain = vec![0u8; VNET_HDR_LEN];
        chain.extend_from_slice(frame);
        self.mem.write_slice(&chain, GuestAddress(TX_BUF)).unwrap();
        self.send_chain(&[Buf::read(TX_BUF, chain.len() as u32)]);
    }

    /// Posts `bufs` as one TX chain, kicks, and waits for the device to take it.
    pub fn send_chain(&mut self, bufs: &[Buf]) {
        self.post(TX_QUEUE, bufs);
        let want = self.seen_used[TX_QUEUE].wrapping_add(1);
        self.kick(TX_QUEUE);
        self.wait_used(TX_QUEUE, want);
        self.seen_used[TX_QUEUE] = want;
        assert_eq!(self.used(TX_QUEUE, want.wrapping_sub(1)).1, 0);
    }
}

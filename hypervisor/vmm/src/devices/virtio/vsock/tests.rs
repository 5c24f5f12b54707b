//! The vsock glue through the mmio transport, without KVM: a fake driver writes the
//! registers and the rings in guest memory, a real unix-socket client is the host, and
//! the device thread runs for real (the kick eventfd stands in for the ioeventfd).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cocoon_vsock::proto::{Header, Op, HEADER_SIZE, HOST_CID, TYPE_STREAM};
use cocoon_vsock::VsockConfig;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::mmio::CONFIG_SPACE_OFFSET;
use crate::devices::virtio::test_utils::{negotiate, publish, r32, setup_queue, transport, w32};
use crate::devices::virtio::MmioTransport;

const GUEST_CID: u64 = 3;
const GUEST_PORT: u32 = 1234;
const SIZE: u16 = 16;
const RX_BUF: u64 = 0x10_0000;
const TX_BUF: u64 = 0x20_0000;
const RX_BUF_LEN: u32 = 4096 + HEADER_SIZE as u32;

fn queue_base(index: u32) -> u64 {
    0x1_0000 * (u64::from(index) + 1)
}

/// The driver side: registers through the transport, rings in guest memory.
struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    irq: EventFd,
    avail: [u16; 3],
}

impl Driver {
    fn new(device: Vsock) -> Driver {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let (t, irq) = transport(device, mem.clone());
        Driver {
            t,
            mem,
            irq,
            avail: [0; 3],
        }
    }

    fn w(&mut self, reg: u32, v: u32) {
        w32(&mut self.t, reg, v);
    }

    fn r(&mut self, reg: u32) -> u32 {
        r32(&mut self.t, reg)
    }

    /// The whole initialization sequence, VERSION_1 only, three queues of 16.
    fn initialize(&mut self) {
        self.initialize_with(1 << VIRTIO_F_VERSION_1);
    }

    /// [`Driver::initialize`] with `features`.
    fn initialize_with(&mut self, features: u64) {
        negotiate(&mut self.t, features);
        for q in 0..3 {
            setup_queue(&mut self.t, q, QUEUE_SIZE, SIZE, queue_base(q));
        }
        self.avail = [0; 3];
    }

    fn driver_ok(&mut self) {
        self.w(VIRTIO_MMIO_STATUS, 0xf);
        assert!(self.t.is_activated());
    }

    /// Posts one descriptor (`write` = device-writable) as descriptor 0 of queue `q`.
    fn post(&mut self, q: u32, addr: u64, len: u32, write: bool) {
        let base = queue_base(q);
        let flags: u16 = if write { 2 } else { 0 };
        let desc = base;
        self.mem.write_obj(addr, GuestAddress(desc)).unwrap();
        self.mem.write_obj(len, GuestAddress(desc + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(desc + 12)).unwrap();
        publish(
            &self.mem,
            base + 0x1000,
            SIZE,
            &mut self.avail[q as usize],
            0,
        );
    }

    fn used_idx(&self, q: u32) -> u16 {
        self.mem
            .read_obj(GuestAddress(queue_base(q) + 0x2000 + 2))
            .unwrap()
    }

    /// Waits until queue `q`'s used index reaches `idx`.
    fn wait_used(&self, q: u32, idx: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx(q) != idx {
            assert!(
                Instant::now() < deadline,
                "queue {q} never reached used {idx}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends one packet on the TX queue and waits for the device to take it.
    fn send(&mut self, hdr: Header, data: &[u8]) {
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(TX_BUF))
            .unwrap();
        self.mem
            .write_slice(data, GuestAddress(TX_BUF + HEADER_SIZE as u64))
            .unwrap();
        let len = (HEADER_SIZE + data.len()) as u32;
        let want = self.avail[1].wrapping_add(1);
        self.post(1, TX_BUF, len, false);
        self.w(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        self.wait_used(1, want);
    }
}

fn guest_hdr(op: Op, dst_port: u32, data_len: usize) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: GUEST_PORT,
        dst_port,
        len: data_len as u32,
        type_: TYPE_STREAM,
        op: op.to_u16(),
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = vec![];
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF after {line:?}");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn host_connect_reaches_the_guest_and_the_guest_answers() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let (vsock, thread) = Vsock::new(VsockConfig::new(GUEST_CID, &uds), kick).unwrap();
    let glue = vsock.metrics();
    let mut d = Driver::new(vsock);

    assert_eq!(d.r(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_VSOCK);
    let cid_low = d.r(CONFIG_SPACE_OFFSET as u32);
    let cid_high = d.r(CONFIG_SPACE_OFFSET as u32 + 4);
    assert_eq!((cid_low, cid_high), (GUEST_CID as u32, 0));

    // A host client before the guest is up: its request waits for the driver.
    let mut client = UnixStream::connect(&uds).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
        .unwrap();

    d.initialize();
    d.post(0, RX_BUF, RX_BUF_LEN, true);
    d.driver_ok();
    d.wait_used(0, 1);
    let mut raw = [0u8; HEADER_SIZE];
    d.mem.read_slice(&mut raw, GuestAddress(RX_BUF)).unwrap();
    let req = Header::from_bytes(&raw);
    assert_eq!(req.op(), Some(Op::Request));
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((req.dst_port, req.type_), (GUEST_PORT, TYPE_STREAM));
    assert_eq!(d.irq.read().unwrap(), 1, "the used-buffer interrupt fired");
    assert_eq!(d.r(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);

    // The guest accepts and writes; the host sees the handshake reply, then the bytes.
    d.post(0, RX_BUF, RX_BUF_LEN, true);
    d.send(guest_hdr(Op::Response, req.src_port, 0), &[]);
    assert_eq!(read_line(&mut client), format!("OK {}\n", req.src_port));
    d.send(guest_hdr(Op::Rw, req.src_port, 5), b"hello");
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    // A driver reset drops the connection: the host sees EOF.
    d.w(VIRTIO_MMIO_STATUS, 0);
    let mut rest = vec![];
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(glue.queue_errors.load(Ordering::Relaxed), 0);

    // Ending the device thread removes the socket.
    thread.stop();
    assert!(!uds.exists());
}

#[test]
fn a_bogus_ring_is_survived_and_a_reset_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let (vsock, _thread) = Vsock::new(VsockConfig::new(GUEST_CID, &uds), kick).unwrap();
    let glue = vsock.metrics();
    let mut d = Driver::new(vsock);
    d.initialize();
    d.driver_ok();
    // An available index far ahead of the ring: virtio-queue refuses to pop from it.
    let woken = glue.wakeups.load(Ordering::Relaxed);
    d.mem
        .write_obj(0x8000u16, GuestAddress(queue_base(1) + 0x1000 + 2))
        .unwrap();
    d.w(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while glue.wakeups.load(Ordering::Relaxed) == woken {
        assert!(Instant::now() < deadline, "the notification never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(d.used_idx(1), 0);
    // The device is usable again after a reset and a fresh initialization.
    d.initialize();
    d.post(0, RX_BUF, RX_BUF_LEN, true);
    d.driver_ok();
    let mut client = UnixStream::connect(&uds).unwrap();
    client.write_all(b"CONNECT 9\n").unwrap();
    d.wait_used(0, 1);
}

#[test]
fn activation_needs_rx_and_tx() {
    let dir = tempfile::tempdir().unwrap();
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let config = VsockConfig::new(GUEST_CID, dir.path().join("v.sock"));
    let (vsock, _thread) = Vsock::new(config, kick).unwrap();
    let mut d = Driver::new(vsock);
    // Only the RX queue made ready.
    d.w(VIRTIO_MMIO_STATUS, 1);
    d.w(VIRTIO_MMIO_STATUS, 3);
    d.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.w(VIRTIO_MMIO_DRIVER_FEATURES, 1);
    d.w(VIRTIO_MMIO_STATUS, 0xb);
    d.w(VIRTIO_MMIO_QUEUE_SEL, 0);
    d.w(VIRTIO_MMIO_QUEUE_READY, 1);
    d.w(VIRTIO_MMIO_STATUS, 0xf);
    assert!(!d.t.is_activated());
    assert_ne!(d.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

#[test]
fn chains_through_the_longest_indirect_tables_are_refused() {
    // INDIRECT_DESC is offered and negotiated here, but a chain is capped: one through
    // a table of 65 535 descriptors is refused before it is walked, although its
    // first descriptor holds a good packet.
    let dir = tempfile::tempdir().unwrap();
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let config = VsockConfig::new(GUEST_CID, dir.path().join("v.sock"));
    let (vsock, _thread) = Vsock::new(config, kick).unwrap();
    let device = vsock.device_metrics();
    let mut d = Driver::new(vsock);
    d.initialize_with((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC));
    d.driver_ok();
    assert_ne!(d.t.acked_features() & (1 << VIRTIO_RING_F_INDIRECT_DESC), 0);

    // A connection request to a port nobody listens on, then zero-length descriptors.
    let hdr = guest_hdr(Op::Request, 9, 0);
    d.mem
        .write_slice(&hdr.to_bytes(), GuestAddress(TX_BUF))
        .unwrap();
    let table = 0x30_0000;
    let entries = u16::MAX;
    for i in 0..entries {
        let (len, next) = if i == 0 {
            (HEADER_SIZE as u32, 1u16)
        } else {
            (0, 1)
        };
        let flags: u16 = if i + 1 < entries { next } else { 0 };
        let at = GuestAddress(table + 16 * u64::from(i));
        d.mem.write_obj(TX_BUF, at).unwrap();
        d.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        d.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        d.mem.write_obj(i + 1, at.unchecked_add(14)).unwrap();
    }
    // Descriptor 0 of the TX queue: INDIRECT, the whole table.
    let want = d.avail[1].wrapping_add(1);
    d.post(1, table, 16 * u32::from(entries), false);
    d.mem
        .write_obj(4u16, GuestAddress(queue_base(1) + 12))
        .unwrap();
    d.w(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    d.wait_used(1, want);
    let m = device.snapshot();
    assert_eq!(m.tx_packets, 1, "{m:?}");
    assert_eq!(m.bad_descriptors, 1, "{m:?}");
    assert!(cocoon_vsock::MAX_CHAIN_DESCRIPTORS < usize::from(entries));
}

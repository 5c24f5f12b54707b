//! The block device through the mmio transport, without KVM: a fake driver writes the
//! registers and the ring in guest memory, the device thread runs for real (the kick
//! eventfd stands in for the ioeventfd) on a real disk file.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::mmio::CONFIG_SPACE_OFFSET;
use crate::devices::virtio::test_utils::{
    device_features, negotiate, publish, r32, setup_queue, transport, w32,
};
use crate::devices::virtio::MmioTransport;
use crate::devices::BusDevice;

const SIZE: u16 = 16;
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = 0x1_1000;
const USED: u64 = 0x1_2000;
const HDR: u64 = 0x2_0000;
const DATA: u64 = 0x2_1000;
const STATUS: u64 = 0x2_2000;
const SECTORS: u64 = 64;

/// The driver side: registers through the transport, the ring in guest memory.
struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    irq: EventFd,
    avail: u16,
}

impl Driver {
    fn new(block: Block) -> Driver {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (t, irq) = transport(block, mem.clone());
        Driver {
            t,
            mem,
            irq,
            avail: 0,
        }
    }

    fn w(&mut self, reg: u32, v: u32) {
        w32(&mut self.t, reg, v);
    }

    fn r(&mut self, reg: u32) -> u32 {
        r32(&mut self.t, reg)
    }

    fn features(&mut self) -> u64 {
        device_features(&mut self.t)
    }

    /// Reset, VERSION_1 only, one queue of 16, DRIVER_OK.
    fn initialize(&mut self) {
        negotiate(&mut self.t, 1 << VIRTIO_F_VERSION_1);
        // AVAIL and USED follow DESC a page apart.
        setup_queue(&mut self.t, 0, QUEUE_SIZE, SIZE, DESC);
        // The rings start empty.
        self.avail = 0;
        self.mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
        self.mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
        self.w(VIRTIO_MMIO_STATUS, 0xf);
        assert!(self.t.is_activated());
    }

    /// Descriptor `i`: `len` bytes at `addr`, chained to `i + 1` unless last.
    fn desc(&self, i: u16, addr: u64, len: u32, write: bool, last: bool) {
        let at = GuestAddress(DESC + 16 * u64::from(i));
        let flags = u16::from(!last) | if write { 2 } else { 0 };
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(i + 1, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Posts a request (header, one data buffer, status) as descriptors 0..3 and
    /// notifies; waits until the device returns it. Returns (status, used length).
    fn request(&mut self, type_: u32, sector: u64, len: u32, write: bool) -> (u8, u32) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&type_.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        self.desc(0, HDR, 16, false, false);
        self.desc(1, DATA, len, write, false);
        self.desc(2, STATUS, 1, true, true);
        publish(&self.mem, AVAIL, SIZE, &mut self.avail, 0);
        self.w(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        self.wait_used(self.avail);
        let status = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        let used_slot = u64::from(self.avail.wrapping_sub(1) % SIZE);
        let len = self
            .mem
            .read_obj(GuestAddress(USED + 8 + 8 * used_slot))
            .unwrap();
        (status, len)
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// Waits until the used index reaches `idx` (a hang guard, not a timing check).
    fn wait_used(&self, idx: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx() != idx {
            assert!(Instant::now() < deadline, "used index never reached {idx}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn disk_file(dir: &Path) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::write(&path, vec![0u8; SECTORS as usize * 512 + 100]).unwrap();
    path
}

fn spec(path: &Path, read_only: bool) -> DriveSpec {
    DriveSpec {
        path: path.to_owned(),
        read_only,
        id: None,
    }
}

fn kick() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).unwrap()
}

#[test]
fn identity_features_and_config_space() {
    let dir = tempfile::tempdir().unwrap();
    let (block, _thread) = Block::new(&spec(&disk_file(dir.path()), false), kick()).unwrap();
    let mut d = Driver::new(block);
    assert_eq!(d.r(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
    let f = d.features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature {bit}");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    let config = |d: &mut Driver, off: u32| d.r(CONFIG_SPACE_OFFSET as u32 + off);
    assert_eq!(config(&mut d, 0), SECTORS as u32, "capacity, low");
    assert_eq!(config(&mut d, 4), 0, "capacity, high");
    assert_eq!(config(&mut d, 8), SIZE_MAX);
    assert_eq!(config(&mut d, 12), SEG_MAX);
    assert_eq!(config(&mut d, 20), 512, "blk_size");
    assert_eq!(config(&mut d, 24), 0, "nothing beyond");
    assert_eq!(config(&mut d, 0xefc), 0);
    // Byte-wise reads see the same bytes; writes change nothing.
    let mut b = [0u8; 1];
    d.t.read(CONFIG_SPACE_OFFSET, &mut b);
    assert_eq!(b[0], SECTORS as u8);
    d.t.write(CONFIG_SPACE_OFFSET, &[0xff; 4]);
    assert_eq!(config(&mut d, 0), SECTORS as u32);
}

#[test]
fn guest_writes_and_reads_through_the_device_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk_file(dir.path());
    let (block, thread) = Block::new(&spec(&path, false), kick()).unwrap();
    let metrics = block.metrics();
    let mut d = Driver::new(block);
    d.initialize();
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 13 % 256) as u8).collect();
    d.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    assert_eq!(d.request(VIRTIO_BLK_T_OUT, 7, 1024, false), (0, 1));
    assert_eq!(&std::fs::read(&path).unwrap()[7 * 512..9 * 512], &data[..]);
    assert_eq!(d.irq.read().unwrap(), 1, "the used-buffer interrupt fired");
    assert_eq!(d.r(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    d.mem.write_slice(&[0u8; 1024], GuestAddress(DATA)).unwrap();
    assert_eq!(d.request(VIRTIO_BLK_T_IN, 7, 1024, true), (0, 1025));
    let mut back = vec![0u8; 1024];
    d.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, data);
    assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0, false).0, 0);
    assert_eq!(d.request(VIRTIO_BLK_T_IN, SECTORS, 512, true), (1, 1));
    assert_eq!(metrics.requests.load(Ordering::Relaxed), 4);
    assert_eq!(metrics.write_bytes.load(Ordering::Relaxed), 1024);
    assert_eq!(metrics.flushes.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.bad_requests.load(Ordering::Relaxed), 1);
    // While the device thread lives, the image stays locked; ending it unlocks.
    assert!(matches!(
        Disk::open(&spec(&path, true)),
        Err(DiskError::Locked { .. })
    ));
    d.w(VIRTIO_MMIO_STATUS, 0);
    thread.stop();
    Disk::open(&spec(&path, false)).unwrap();
}

#[test]
fn a_broken_ring_waits_for_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk_file(dir.path());
    let (block, _thread) = Block::new(&spec(&path, false), kick()).unwrap();
    let metrics = block.metrics();
    let mut d = Driver::new(block);
    d.initialize();
    // An available index far ahead of the ring: the queue is given up.
    d.mem.write_obj(0x8000u16, GuestAddress(AVAIL + 2)).unwrap();
    d.w(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.queue_errors.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the fault was never seen");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(d.used_idx(), 0);
    // A reset and a fresh start serve again.
    d.initialize();
    assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0, false).0, 0);
}

#[test]
fn read_only_drives_offer_ro_and_share_their_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk_file(dir.path());
    let (block, _t1) = Block::new(&spec(&path, true), kick()).unwrap();
    let (_other, _t2) = Block::new(&spec(&path, true), kick()).unwrap();
    let err = Block::new(&spec(&path, false), kick()).err().unwrap();
    assert!(
        matches!(err, BlockError::Disk(DiskError::Locked { .. })),
        "{err:?}"
    );
    let mut d = Driver::new(block);
    assert_ne!(d.features() & (1 << VIRTIO_BLK_F_RO), 0);
    d.initialize();
    d.mem.write_slice(&[0x55; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(d.request(VIRTIO_BLK_T_OUT, 0, 512, false), (1, 1));
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
}

//! The request worker on real guest memory, a real split queue (virtio-queue's mock
//! driver writes the descriptor table and the available ring) and a real disk file.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use proptest::prelude::*;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::alloc_probe::peak_heap;
use super::disk::Disk;
use super::worker::{Processed, Worker, MAX_DESCRIPTORS};
use super::{BlockMetrics, MAX_REQUEST_BYTES};
use crate::config::DriveSpec;
use crate::devices::virtio::queue::ChainLimits;

/// The chains the device takes: INDIRECT_DESC is not offered.
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: MAX_DESCRIPTORS,
    indirect: false,
};

const RING: u64 = 0x1000;
const QSIZE: u16 = 64;
/// Where test buffers are handed out from.
const BUFS: u64 = 0x10_0000;
const SECTORS: u64 = 16;
/// Bytes after the last whole sector: never part of the disk.
const TAIL: usize = 300;
const TAIL_BYTE: u8 = 0xab;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Most heap one pass may use, whatever the requests (the bounce buffer is made once).
const HEAP_BOUND: usize = 32 * 1024;

/// The byte the test disk holds at `offset` before anything writes it.
fn pattern(offset: usize) -> u8 {
    (offset * 7 + offset / 512) as u8
}

fn memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

/// One descriptor of a chain: a buffer, device-writable or not.
#[derive(Clone, Copy, Debug)]
struct Seg {
    addr: u64,
    len: u32,
    write: bool,
}

fn ro(addr: u64, len: u32) -> Seg {
    Seg {
        addr,
        len,
        write: false,
    }
}

fn wo(addr: u64, len: u32) -> Seg {
    Seg {
        addr,
        len,
        write: true,
    }
}

/// A worker on a fresh disk file, with a queue the mock driver fills.
struct Harness<'m> {
    mem: &'m GuestMemoryMmap,
    vq: MockSplitQueue<'m, GuestMemoryMmap>,
    queue: Queue,
    worker: Worker,
    metrics: Arc<BlockMetrics>,
    path: PathBuf,
    _dir: tempfile::TempDir,
    next_desc: u16,
    next_buf: u64,
}

impl<'m> Harness<'m> {
    fn new(mem: &'m GuestMemoryMmap, read_only: bool, sectors: u64) -> Harness<'m> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let size = sectors as usize * 512;
        let mut content: Vec<u8> = (0..size.min(1 << 20)).map(pattern).collect();
        content.extend(std::iter::repeat_n(TAIL_BYTE, TAIL));
        std::fs::write(&path, &content).unwrap();
        if size > 1 << 20 {
            // Large disks are sparse beyond the first MiB.
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len((size + TAIL) as u64).unwrap();
        }
        let disk = Disk::open(&DriveSpec {
            path: path.clone(),
            read_only,
            id: Some("disk-7".into()),
        })
        .unwrap();
        let metrics = Arc::new(BlockMetrics::default());
        let vq = MockSplitQueue::create(mem, GuestAddress(RING), QSIZE);
        let queue = vq.create_queue::<Queue>().unwrap();
        Harness {
            mem,
            vq,
            queue,
            worker: Worker::new(disk, metrics.clone()),
            metrics,
            path,
            _dir: dir,
            next_desc: 0,
            next_buf: BUFS,
        }
    }

    /// A fresh guest buffer of `len` bytes, filled with `fill`.
    fn buf(&mut self, len: usize, fill: u8) -> u64 {
        let at = self.next_buf;
        self.mem
            .write_slice(&vec![fill; len], GuestAddress(at))
            .unwrap();
        self.next_buf += (len as u64).next_multiple_of(64);
        at
    }

    fn header(&mut self, type_: u32, sector: u64) -> u64 {
        let at = self.buf(16, 0);
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&type_.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(at)).unwrap();
        at
    }

    /// Publishes one chain; returns its head index.
    fn submit(&mut self, segs: &[Seg]) -> u16 {
        let n = segs.len() as u16;
        if self.next_desc + n > QSIZE {
            self.next_desc = 0;
        }
        let base = self.next_desc;
        let descs: Vec<RawDescriptor> = segs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let i = i as u16;
                let more = i + 1 < n;
                let flags = if more { NEXT } else { 0 } | if s.write { WRITE } else { 0 };
                SplitDescriptor::new(s.addr, s.len, flags, if more { base + i + 1 } else { 0 })
                    .into()
            })
            .collect();
        self.vq.add_desc_chains(&descs, base).unwrap();
        self.next_desc += n;
        base
    }

    /// header, then `data`, then a 1-byte status; returns the status byte's address.
    fn request(&mut self, type_: u32, sector: u64, data: &[Seg]) -> u64 {
        let hdr = self.header(type_, sector);
        let status = self.buf(1, 0xee);
        let mut segs = vec![ro(hdr, 16)];
        segs.extend_from_slice(data);
        segs.push(wo(status, 1));
        self.submit(&segs);
        status
    }

    fn run(&mut self) -> Processed {
        let (done, peak) = peak_heap(|| {
            self.worker
                .process_queue(&mut self.queue, self.mem, LIMITS, &|| false)
                .unwrap()
        });
        assert!(peak < HEAP_BOUND, "one pass took {peak} bytes of heap");
        done
    }

    fn byte(&self, addr: u64) -> u8 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(self.vq.used_addr().unchecked_add(2))
            .unwrap()
    }

    /// Used element `slot`: (head, length).
    fn used(&self, slot: u16) -> (u32, u32) {
        let at = self.vq.used_addr().unchecked_add(4 + 8 * u64::from(slot));
        let id = self.mem.read_obj(at).unwrap();
        let len = self.mem.read_obj(at.unchecked_add(4)).unwrap();
        (id, len)
    }

    fn file(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    fn m(&self, pick: impl Fn(&BlockMetrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        pick(&self.metrics).load(Relaxed)
    }
}

#[test]
fn reads_sectors_into_split_buffers() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let (a, b) = (h.buf(700, 0), h.buf(324, 0));
    let status = h.request(VIRTIO_BLK_T_IN, 2, &[wo(a, 700), wo(b, 324)]);
    let done = h.run();
    assert_eq!(
        done,
        Processed {
            served: 1,
            notify: true,
            more: false
        }
    );
    assert_eq!(h.byte(status), S_OK);
    assert_eq!(h.used(0), (0, 1025));
    let mut got = h.bytes(a, 700);
    got.extend(h.bytes(b, 324));
    let want: Vec<u8> = (1024..2048).map(pattern).collect();
    assert_eq!(got, want);
    assert_eq!(h.m(|m| &m.requests), 1);
    assert_eq!(h.m(|m| &m.read_bytes), 1024);
    assert_eq!(h.m(|m| &m.bad_requests), 0);
}

#[test]
fn writes_reach_the_file_and_read_back() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let before = h.file();
    let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    let src = h.buf(1024, 0);
    mem.write_slice(&data, GuestAddress(src)).unwrap();
    let s1 = h.request(VIRTIO_BLK_T_OUT, 5, &[ro(src, 512), ro(src + 512, 512)]);
    h.run();
    assert_eq!(h.byte(s1), S_OK);
    assert_eq!(h.used(0).1, 1);
    let after = h.file();
    assert_eq!(&after[5 * 512..7 * 512], &data[..]);
    assert_eq!(&after[..5 * 512], &before[..5 * 512]);
    assert_eq!(&after[7 * 512..], &before[7 * 512..]);
    // Read back through the device.
    let dst = h.buf(1024, 0);
    let s2 = h.request(VIRTIO_BLK_T_IN, 5, &[wo(dst, 1024)]);
    h.run();
    assert_eq!(h.byte(s2), S_OK);
    assert_eq!(h.bytes(dst, 1024), data);
    assert_eq!(h.m(|m| &m.write_bytes), 1024);
    assert_eq!(h.m(|m| &m.read_bytes), 1024);
}

#[test]
fn flush_and_get_id() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let s1 = h.request(VIRTIO_BLK_T_FLUSH, 0, &[]);
    let id = h.buf(20, 0xff);
    let s2 = h.request(VIRTIO_BLK_T_GET_ID, 0, &[wo(id, 20)]);
    let short = h.buf(4, 0xff);
    let s3 = h.request(VIRTIO_BLK_T_GET_ID, 0, &[wo(short, 4)]);
    assert_eq!(h.run().served, 3);
    assert_eq!([h.byte(s1), h.byte(s2), h.byte(s3)], [S_OK; 3]);
    assert_eq!(h.bytes(id, 20), b"disk-7\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(h.bytes(short, 4), b"disk");
    assert_eq!([h.used(0).1, h.used(1).1, h.used(2).1], [1, 21, 5]);
    assert_eq!(h.m(|m| &m.flushes), 1);
}

#[test]
fn out_of_range_and_misaligned_transfers_fail_with_ioerr() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let before = h.file();
    let b = h.buf(1024, 0x77);
    let statuses = [
        h.request(VIRTIO_BLK_T_IN, SECTORS, &[wo(b, 512)]),
        h.request(VIRTIO_BLK_T_OUT, SECTORS - 1, &[ro(b, 1024)]),
        h.request(VIRTIO_BLK_T_OUT, u64::MAX, &[ro(b, 512)]),
        h.request(VIRTIO_BLK_T_OUT, u64::MAX / 512, &[ro(b, 512)]),
        h.request(VIRTIO_BLK_T_IN, 0, &[wo(b, 100)]),
        h.request(VIRTIO_BLK_T_OUT, 0, &[ro(b, 700)]),
    ];
    assert_eq!(h.run().served, statuses.len());
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(h.byte(*s), S_IOERR, "request {i}");
        assert_eq!(h.used(i as u16).1, 1, "request {i} wrote no data");
    }
    assert_eq!(h.bytes(b, 1024), vec![0x77; 1024]);
    assert_eq!(h.file(), before);
    assert_eq!(h.m(|m| &m.bad_requests), statuses.len() as u64);
    assert_eq!(h.m(|m| &m.read_bytes) + h.m(|m| &m.write_bytes), 0);
    // The last sector itself is fine.
    let s = h.request(VIRTIO_BLK_T_IN, SECTORS - 1, &[wo(b, 512)]);
    h.run();
    assert_eq!(h.byte(s), S_OK);
}

#[test]
fn read_only_disks_refuse_writes_and_serve_reads() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, true, SECTORS);
    let before = h.file();
    let b = h.buf(512, 0x11);
    let s1 = h.request(VIRTIO_BLK_T_OUT, 0, &[ro(b, 512)]);
    let s2 = h.request(VIRTIO_BLK_T_IN, 1, &[wo(b, 512)]);
    let s3 = h.request(VIRTIO_BLK_T_FLUSH, 0, &[]);
    h.run();
    assert_eq!([h.byte(s1), h.byte(s2), h.byte(s3)], [S_IOERR, S_OK, S_OK]);
    assert_eq!(h.file(), before);
    assert_eq!(
        h.bytes(b, 512),
        (512..1024).map(pattern).collect::<Vec<_>>()
    );
    assert_eq!(h.m(|m| &m.bad_requests), 1);
}

#[test]
fn unsupported_types_answer_unsupp() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let b = h.buf(512, 0);
    // DISCARD, WRITE_ZEROES, SCSI, and nonsense.
    let statuses: Vec<u64> = [11, 13, 2, 0xdead_beef]
        .iter()
        .map(|t| h.request(*t, 0, &[wo(b, 512)]))
        .collect();
    h.run();
    for s in &statuses {
        assert_eq!(h.byte(*s), S_UNSUPP);
    }
    assert_eq!(h.used(0).1, 1);
    assert_eq!(h.m(|m| &m.unsupported), 4);
    assert_eq!(h.m(|m| &m.bad_requests), 0);
}

#[test]
fn any_chain_shape_split_headers_and_a_status_sharing_a_buffer() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    // An IN whose header comes in three pieces far apart and whose last buffer holds
    // both the data and the status (its last byte).
    let hdr = h.header(VIRTIO_BLK_T_IN, 3);
    let (p1, p2, p3) = (h.buf(3, 0), h.buf(9, 0), h.buf(4, 0));
    for (at, start, len) in [(p1, 0, 3), (p2, 3, 9), (p3, 12, 4)] {
        let part = h.bytes(hdr + start, len);
        mem.write_slice(&part, GuestAddress(at)).unwrap();
    }
    let data = h.buf(513, 0xee);
    h.submit(&[ro(p1, 3), ro(p2, 9), ro(p3, 4), wo(data, 513)]);
    // An OUT with the header and the data in one buffer.
    let both = h.buf(16 + 512, 0x3c);
    let out = h.header(VIRTIO_BLK_T_OUT, 9);
    let head = h.bytes(out, 16);
    mem.write_slice(&head, GuestAddress(both)).unwrap();
    let status = h.buf(1, 0xee);
    h.submit(&[ro(both, 16 + 512), wo(status, 1)]);
    assert_eq!(h.run().served, 2);
    assert_eq!(
        h.bytes(data, 512),
        (3 * 512..4 * 512).map(pattern).collect::<Vec<_>>()
    );
    assert_eq!(h.byte(data + 512), S_OK);
    assert_eq!(h.used(0).1, 513);
    assert_eq!(h.byte(status), S_OK);
    assert_eq!(&h.file()[9 * 512..10 * 512], &[0x3c; 512][..]);
}

#[test]
fn garbage_chains_are_dropped_or_refused_and_the_queue_goes_on() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let before = h.file();
    let hdr = h.header(VIRTIO_BLK_T_IN, 0);
    let b = h.buf(512, 0);
    let outside = 1u64 << 40;
    // No writable byte at all: dropped.
    h.submit(&[ro(hdr, 16), ro(b, 512)]);
    // The status buffer outside guest memory: dropped.
    h.submit(&[ro(hdr, 16), wo(outside, 1)]);
    // An empty writable buffer is no status either.
    h.submit(&[ro(hdr, 16), wo(b, 0)]);
    // Readable buffers outside memory, a short header: IOERR.
    let s1 = h.buf(1, 0xee);
    h.submit(&[ro(outside, 16), wo(s1, 1)]);
    let s2 = h.buf(1, 0xee);
    h.submit(&[ro(hdr, 10), wo(s2, 1)]);
    // A descriptor wrapping around the address space: IOERR.
    let s3 = h.buf(1, 0xee);
    h.submit(&[ro(u64::MAX - 8, 16), wo(s3, 1)]);
    // A good request after all that.
    let s4 = h.request(VIRTIO_BLK_T_IN, 1, &[wo(b, 512)]);
    assert_eq!(h.run().served, 7);
    assert_eq!([h.used(0).1, h.used(1).1, h.used(2).1], [0, 0, 0]);
    assert_eq!([h.byte(s1), h.byte(s2), h.byte(s3)], [S_IOERR; 3]);
    assert_eq!(h.byte(s4), S_OK);
    assert_eq!(h.m(|m| &m.bad_requests), 6);
    assert_eq!(h.m(|m| &m.requests), 7);
    assert_eq!(h.file(), before);
}

#[test]
fn chain_length_is_bounded_even_through_indirect_tables() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    // An indirect table of 4096 one-byte writable descriptors, never offered but
    // followed by the chain walker: dropped before anything is collected from it.
    let table = h.buf(4096 * 16, 0);
    let target = h.buf(1, 0);
    for i in 0..4096u16 {
        let d = SplitDescriptor::new(target, 1, NEXT | WRITE, i + 1);
        mem.write_obj(
            RawDescriptor::from(d),
            GuestAddress(table + 16 * u64::from(i)),
        )
        .unwrap();
    }
    let head = h.submit(&[Seg {
        addr: table,
        len: 4096 * 16,
        write: false,
    }]);
    let d = SplitDescriptor::new(table, 4096 * 16, INDIRECT, 0);
    h.vq.desc_table().store(head, d.into()).unwrap();
    h.run();
    assert_eq!(h.used(0).1, 0);
    assert_eq!(h.m(|m| &m.bad_requests), 1);
}

#[test]
fn requests_through_indirect_tables_are_refused() {
    // INDIRECT_DESC is not offered: even a short, well-formed request through a table
    // is refused before anything is read from it or written to the disk's reader.
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let hdr = h.header(VIRTIO_BLK_T_IN, 0);
    let data = h.buf(512, 0xee);
    let status = h.buf(1, 0xee);
    let table = h.buf(3 * 16, 0);
    let descs = [
        SplitDescriptor::new(hdr, 16, NEXT, 1),
        SplitDescriptor::new(data, 512, NEXT | WRITE, 2),
        SplitDescriptor::new(status, 1, WRITE, 0),
    ];
    for (i, d) in descs.into_iter().enumerate() {
        mem.write_obj(RawDescriptor::from(d), GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let head = h.submit(&[ro(table, 48)]);
    let d = SplitDescriptor::new(table, 48, INDIRECT, 0);
    h.vq.desc_table().store(head, d.into()).unwrap();
    assert_eq!(h.run().served, 1);
    assert_eq!(h.used(0).1, 0);
    assert_eq!(h.byte(status), 0xee);
    assert_eq!(h.bytes(data, 512), vec![0xee; 512]);
    assert_eq!(h.m(|m| &m.bad_requests), 1);
    assert_eq!(h.m(|m| &m.read_bytes), 0);
}

#[test]
fn the_largest_request_moves_through_a_bounded_buffer() {
    // An 8 MiB disk read and written through single 8 MiB guest buffers: the heap
    // stays far below the request size (checked in `run`).
    let mem = memory(32 << 20);
    let sectors = MAX_REQUEST_BYTES / 512 + 8;
    let mut h = Harness::new(&mem, false, sectors);
    let len = MAX_REQUEST_BYTES as u32;
    let src = h.buf(len as usize, 0x42);
    let s1 = h.request(VIRTIO_BLK_T_OUT, 8, &[ro(src, len)]);
    let dst = h.buf(len as usize, 0);
    let s2 = h.request(VIRTIO_BLK_T_IN, 8, &[wo(dst, len)]);
    // One sector more is refused.
    let big = h.buf(len as usize + 512, 0);
    let s3 = h.request(VIRTIO_BLK_T_IN, 0, &[wo(big, len + 512)]);
    h.run();
    assert_eq!([h.byte(s1), h.byte(s2), h.byte(s3)], [S_OK, S_OK, S_IOERR]);
    assert!(h.bytes(dst, len as usize).iter().all(|&b| b == 0x42));
    assert_eq!(h.used(1).1, len + 1);
    assert_eq!(h.m(|m| &m.write_bytes), MAX_REQUEST_BYTES);
    assert_eq!(h.m(|m| &m.read_bytes), MAX_REQUEST_BYTES);
}

#[test]
fn broken_rings_are_faults_and_bad_heads_are_skipped() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    // A head index beyond the queue: taken, counted, not returned.
    let b = h.buf(512, 0);
    h.request(VIRTIO_BLK_T_IN, 0, &[wo(b, 512)]);
    let slot = h.avail_slot(0);
    mem.write_obj(QSIZE + 3, slot).unwrap();
    let s = h.request(VIRTIO_BLK_T_IN, 0, &[wo(b, 512)]);
    assert_eq!(h.run().served, 1);
    assert_eq!(h.used_idx(), 1);
    assert_eq!(h.byte(s), S_OK);
    assert_eq!(h.m(|m| &m.requests), 2);
    assert_eq!(h.m(|m| &m.bad_requests), 1);
    // An available index far ahead of the ring.
    mem.write_obj(0x8000u16, h.vq.avail_addr().unchecked_add(2))
        .unwrap();
    assert!(h
        .worker
        .process_queue(&mut h.queue, &mem, LIMITS, &|| false)
        .is_err());
}

#[test]
fn yielding_leaves_requests_for_the_next_pass() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    let s = h.request(VIRTIO_BLK_T_FLUSH, 0, &[]);
    let done = h
        .worker
        .process_queue(&mut h.queue, &mem, LIMITS, &|| true)
        .unwrap();
    assert_eq!(
        done,
        Processed {
            served: 0,
            notify: false,
            more: true
        }
    );
    assert_eq!(h.byte(s), 0xee);
    assert_eq!(h.run().served, 1);
    assert_eq!(h.byte(s), S_OK);
}

#[test]
fn event_idx_interrupts_only_when_the_driver_asks() {
    let mem = memory(4 << 20);
    let mut h = Harness::new(&mem, false, SECTORS);
    h.queue.set_event_idx(true);
    let used_event = h.vq.avail_addr().unchecked_add(4 + 2 * u64::from(QSIZE));
    let avail_event = h.vq.used_addr().unchecked_add(4 + 8 * u64::from(QSIZE));
    // used_event 0: the first used buffer interrupts.
    h.request(VIRTIO_BLK_T_FLUSH, 0, &[]);
    assert!(h.run().notify);
    // The device asks to be notified at the next available index.
    assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 1);
    // used_event 5: the second does not.
    mem.write_obj(5u16, used_event).unwrap();
    h.request(VIRTIO_BLK_T_FLUSH, 0, &[]);
    let done = h.run();
    assert_eq!((done.served, done.notify), (1, false));
}

impl Harness<'_> {
    /// The address of available ring slot `slot`.
    fn avail_slot(&self, slot: u16) -> GuestAddress {
        self.vq.avail_addr().unchecked_add(4 + 2 * u64::from(slot))
    }
}

/// A segment of a random chain: somewhere sensible or anywhere.
fn seg() -> impl Strategy<Value = Seg> {
    let addr = prop_oneof![
        4 => (0..0x4_0000u64).prop_map(|o| BUFS + o),
        1 => Just((1u64 << 20) * 4 - 8),
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        3 => 0..600u32,
        3 => (0..=128u32).prop_map(|k| k * 512),
        1 => Just(16),
        1 => any::<u32>(),
    ];
    (addr, len, any::<bool>()).prop_map(|(addr, len, write)| Seg { addr, len, write })
}

/// A header the worker will find at a chain's first buffer.
fn header() -> impl Strategy<Value = (u32, u64)> {
    let type_ = prop_oneof![
        Just(VIRTIO_BLK_T_IN),
        Just(VIRTIO_BLK_T_OUT),
        Just(VIRTIO_BLK_T_FLUSH),
        Just(VIRTIO_BLK_T_GET_ID),
        any::<u32>(),
    ];
    let sector = prop_oneof![0..SECTORS + 2, any::<u64>()];
    (type_, sector)
}

/// Checks what a pass may never do: touch the file outside the disk (nor allocate
/// with the request size: checked in `run`).
fn check_file(h: &Harness<'_>, size: usize) -> Result<(), TestCaseError> {
    let file = h.file();
    prop_assert_eq!(file.len(), size + TAIL);
    prop_assert!(file[size..].iter().all(|&b| b == TAIL_BYTE));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random chains with random headers and random guest bytes around them.
    #[test]
    fn random_chains_never_escape(
        chains in prop::collection::vec(
            (header(), prop::collection::vec(seg(), 1..6)), 1..8),
        noise in prop::collection::vec(any::<u8>(), 4096),
        read_only in any::<bool>(),
    ) {
        let mem = memory(4 << 20);
        let mut h = Harness::new(&mem, read_only, SECTORS);
        mem.write_slice(&noise, GuestAddress(BUFS)).unwrap();
        let mut writable = Vec::new();
        for ((type_, sector), segs) in &chains {
            let mut hdr = [0u8; 16];
            hdr[..4].copy_from_slice(&type_.to_le_bytes());
            hdr[8..].copy_from_slice(&sector.to_le_bytes());
            let _ = mem.write_slice(&hdr, GuestAddress(segs[0].addr));
            let w: u64 = segs.iter().filter(|s| s.write).map(|s| u64::from(s.len)).sum();
            writable.push(w);
            h.submit(segs);
        }
        let done = h.run();
        prop_assert_eq!(done.served, chains.len());
        prop_assert_eq!(h.m(|m| &m.requests), chains.len() as u64);
        for (slot, w) in writable.iter().enumerate() {
            prop_assert!(u64::from(h.used(slot as u16).1) <= *w);
        }
        if read_only {
            prop_assert_eq!(h.m(|m| &m.write_bytes), 0);
        }
        check_file(&h, SECTORS as usize * 512)?;
    }

    /// Garbage descriptor tables and available rings (whose buffers may even overlap
    /// the rings: the guest's own memory to scribble on).
    #[test]
    fn garbage_rings_never_escape(
        table in prop::collection::vec(any::<u8>(), 16 * QSIZE as usize),
        ring in prop::collection::vec(prop_oneof![0..QSIZE, any::<u16>()], QSIZE as usize),
        avail_idx in 0..=QSIZE,
        noise in prop::collection::vec(any::<u8>(), 4096),
    ) {
        let mem = memory(4 << 20);
        let mut h = Harness::new(&mem, false, SECTORS);
        mem.write_slice(&noise, GuestAddress(BUFS)).unwrap();
        mem.write_slice(&table, h.vq.desc_table_addr()).unwrap();
        for (i, head) in ring.iter().enumerate() {
            mem.write_obj(*head, h.avail_slot(i as u16)).unwrap();
        }
        mem.write_obj(avail_idx, h.vq.avail_addr().unchecked_add(2)).unwrap();
        let done = h.run();
        prop_assert!(done.served <= usize::from(avail_idx));
        prop_assert_eq!(h.m(|m| &m.requests), u64::from(avail_idx));
        check_file(&h, SECTORS as usize * 512)?;
    }
}

use proptest::prelude::{any, prop, prop_assert, proptest};
use virtio_queue::desc::split::Descriptor as RawDescriptor;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::queue::{write_field, QueueField};

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const SIZE: u16 = 16;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const VRING_DESC_F_INDIRECT: u16 = 4;

fn active_rng(mem: &GuestMemoryMmap) -> (Rng, Arc<VirtioInterrupt>) {
    let mut queue = Queue::new(QUEUE_SIZE).unwrap();
    write_field(&mut queue, QueueField::Size, u32::from(SIZE)).unwrap();
    write_field(&mut queue, QueueField::DescLow, DESC as u32).unwrap();
    write_field(&mut queue, QueueField::DriverLow, AVAIL as u32).unwrap();
    write_field(&mut queue, QueueField::DeviceLow, USED as u32).unwrap();
    queue.set_ready(true);
    let interrupt = Arc::new(VirtioInterrupt::new(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ));
    let mut rng = Rng::new().unwrap();
    rng.activate(ActiveDevice {
        mem: mem.clone(),
        queues: vec![queue],
        interrupt: interrupt.clone(),
        acked_features: 1 << VIRTIO_F_VERSION_1,
    })
    .unwrap();
    (rng, interrupt)
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
}

fn put_desc(mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let d = RawDescriptor::new(addr, len, flags, next);
    mem.write_obj(d, GuestAddress(DESC + 16 * u64::from(i)))
        .unwrap();
}

fn publish(mem: &GuestMemoryMmap, heads: &[u16]) {
    for (slot, head) in heads.iter().enumerate() {
        mem.write_obj(*head, GuestAddress(AVAIL + 4 + 2 * slot as u64))
            .unwrap();
    }
    mem.write_obj(heads.len() as u16, GuestAddress(AVAIL + 2))
        .unwrap();
}

fn used(mem: &GuestMemoryMmap, slot: u64) -> (u32, u32) {
    let id: u32 = mem.read_obj(GuestAddress(USED + 4 + 8 * slot)).unwrap();
    let len: u32 = mem.read_obj(GuestAddress(USED + 8 + 8 * slot)).unwrap();
    (id, len)
}

#[test]
fn fills_writable_chains_and_interrupts() {
    let mem = memory();
    let (mut rng, interrupt) = active_rng(&mem);
    // Chain 0: two writable buffers (64 + 32 bytes). Chain 2: a read-only buffer.
    put_desc(
        &mem,
        0,
        0x8000,
        64,
        VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
        1,
    );
    put_desc(&mem, 1, 0x8040, 32, VRING_DESC_F_WRITE, 0);
    put_desc(&mem, 2, 0x9000, 16, 0, 0);
    publish(&mem, &[0, 2]);
    rng.queue_notify(0);
    let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used_idx, 2);
    assert_eq!(used(&mem, 0), (0, 96));
    assert_eq!(used(&mem, 1), (2, 0));
    let mut buf = [0u8; 96];
    mem.read_slice(&mut buf, GuestAddress(0x8000)).unwrap();
    assert!(buf.iter().any(|&b| b != 0));
    assert_eq!(interrupt.status() & 1, 1);
    let m = rng.metrics();
    assert_eq!(m.bytes.load(Ordering::Relaxed), 96);
    assert_eq!(m.bad_descriptors.load(Ordering::Relaxed), 1);
}

#[test]
fn buffers_outside_memory_are_refused() {
    let mem = memory();
    let (mut rng, _) = active_rng(&mem);
    put_desc(&mem, 0, 0xfff0, 64, VRING_DESC_F_WRITE, 0);
    put_desc(&mem, 1, u64::MAX - 8, 64, VRING_DESC_F_WRITE, 0);
    publish(&mem, &[0, 1]);
    rng.queue_notify(0);
    assert_eq!(rng.metrics().bad_descriptors.load(Ordering::Relaxed), 2);
    assert_eq!(used(&mem, 0).1, 0);
}

#[test]
fn chains_through_indirect_tables_are_refused() {
    // INDIRECT_DESC is not offered: a chain through an indirect table is refused
    // before the table is walked, a short one with a good buffer as much as the
    // longest (65 535 zero-length writable descriptors, the most a table holds).
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
    let (mut rng, _interrupt) = active_rng(&mem);
    assert_eq!(
        rng.features() & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC),
        0
    );
    let short = 0x9000;
    mem.write_obj(
        RawDescriptor::new(0x8000, 64, VRING_DESC_F_WRITE, 0),
        GuestAddress(short),
    )
    .unwrap();
    let longest = 0x10_0000;
    for i in 0..u16::MAX {
        let next = if i + 1 < u16::MAX {
            VRING_DESC_F_NEXT
        } else {
            0
        };
        let d = RawDescriptor::new(0x8000, 0, VRING_DESC_F_WRITE | next, i + 1);
        mem.write_obj(d, GuestAddress(longest + 16 * u64::from(i)))
            .unwrap();
    }
    put_desc(&mem, 0, short, 16, VRING_DESC_F_INDIRECT, 0);
    put_desc(
        &mem,
        1,
        longest,
        16 * u32::from(u16::MAX),
        VRING_DESC_F_INDIRECT,
        0,
    );
    put_desc(&mem, 2, 0x8100, 32, VRING_DESC_F_WRITE, 0);
    publish(&mem, &[0, 1, 2]);
    rng.queue_notify(0);
    assert_eq!(used(&mem, 0), (0, 0));
    assert_eq!(used(&mem, 1), (1, 0));
    assert_eq!(used(&mem, 2), (2, 32), "a direct chain is served");
    assert_eq!(rng.metrics().bad_descriptors.load(Ordering::Relaxed), 2);
    assert_eq!(rng.metrics().bytes.load(Ordering::Relaxed), 32);
}

#[test]
fn reset_deactivates() {
    let mem = memory();
    let (mut rng, _) = active_rng(&mem);
    rng.reset();
    publish(&mem, &[0]);
    rng.queue_notify(0);
    assert_eq!(rng.metrics().requests.load(Ordering::Relaxed), 0);
}

proptest! {
    /// Any descriptor table and avail ring contents: no panic, and no used length
    /// larger than what the chain could hold.
    #[test]
    fn garbage_rings_never_panic(
        table in prop::collection::vec(any::<u8>(), 16 * SIZE as usize),
        ring in prop::collection::vec(any::<u16>(), SIZE as usize),
        avail_idx in any::<u16>(),
    ) {
        let mem = memory();
        let (mut rng, _) = active_rng(&mem);
        mem.write_slice(&table, GuestAddress(DESC)).unwrap();
        for (i, head) in ring.iter().enumerate() {
            mem.write_obj(*head, GuestAddress(AVAIL + 4 + 2 * i as u64)).unwrap();
        }
        mem.write_obj(avail_idx, GuestAddress(AVAIL + 2)).unwrap();
        rng.queue_notify(0);
        let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
        prop_assert!(used_idx <= avail_idx.min(SIZE));
        for slot in 0..u64::from(used_idx) {
            prop_assert!(used(&mem, slot).1 <= MAX_BYTES_PER_CHAIN);
        }
    }
}

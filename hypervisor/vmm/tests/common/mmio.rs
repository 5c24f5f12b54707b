//! virtio-mmio register offsets (virtio 1.2 §4.2.2) and driver steps for test guests.

use super::asm::Asm;

/// The first virtio-mmio window (our layout).
pub const MMIO: u32 = 0xd000_0000;
pub const MAGIC: u32 = 0x000;
pub const VERSION: u32 = 0x004;
pub const DEVICE_ID: u32 = 0x008;
pub const DEVICE_FEATURES: u32 = 0x010;
pub const DEVICE_FEATURES_SEL: u32 = 0x014;
pub const DRIVER_FEATURES: u32 = 0x020;
pub const DRIVER_FEATURES_SEL: u32 = 0x024;
pub const QUEUE_SEL: u32 = 0x030;
pub const QUEUE_NUM_MAX: u32 = 0x034;
pub const QUEUE_NUM: u32 = 0x038;
pub const QUEUE_READY: u32 = 0x044;
pub const QUEUE_NOTIFY: u32 = 0x050;
pub const INTERRUPT_STATUS: u32 = 0x060;
pub const INTERRUPT_ACK: u32 = 0x064;
pub const STATUS: u32 = 0x070;
pub const QUEUE_DESC: u32 = 0x080;
pub const QUEUE_AVAIL: u32 = 0x090;
pub const QUEUE_USED: u32 = 0x0a0;
pub const CONFIG: u32 = 0x100;

/// A split virtqueue the guest places in its memory: descriptor table, available
/// ring and used ring, each at its own page.
#[derive(Clone, Copy)]
pub struct Ring {
    pub desc: u32,
    pub avail: u32,
    pub used: u32,
}

impl Ring {
    /// Three pages from `base`.
    pub const fn at(base: u32) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }
}

/// With `rdi` = [`MMIO`]: selects queue `index` and gives it `size` entries at `ring`,
/// then marks it ready. Jumps to `too_small` if the device offers fewer entries.
pub fn setup_queue(a: &mut Asm, index: u32, size: u32, ring: Ring, too_small: &'static str) {
    a.store32_rdi(QUEUE_SEL, index)
        .load32_rdi(QUEUE_NUM_MAX)
        .cmp_eax(size)
        .jb(too_small)
        .store32_rdi(QUEUE_NUM, size)
        .store32_rdi(QUEUE_DESC, ring.desc)
        .store32_rdi(QUEUE_DESC + 4, 0)
        .store32_rdi(QUEUE_AVAIL, ring.avail)
        .store32_rdi(QUEUE_AVAIL + 4, 0)
        .store32_rdi(QUEUE_USED, ring.used)
        .store32_rdi(QUEUE_USED + 4, 0)
        .store32_rdi(QUEUE_READY, 1);
}

/// Writes descriptor `index` of `ring`: a buffer at `addr` of `len` bytes, `flags`
/// (2 = device-writable), no next.
pub fn write_desc(a: &mut Asm, ring: Ring, index: u32, addr: u32, len: u32, flags: u16) {
    let at = ring.desc + 16 * index;
    a.store64(at, addr)
        .store32(at + 8, len)
        .store16(at + 12, flags);
}

/// Puts descriptor `head` in available slot `slot` and publishes `slot + 1` as the
/// available index.
pub fn publish(a: &mut Asm, ring: Ring, slot: u32, head: u16) {
    a.store16(ring.avail + 4 + 2 * slot, head)
        .store16(ring.avail + 2, (slot + 1) as u16);
}

/// Spins until the used index of `ring` reads `idx`; `top` and `done` are fresh labels.
pub fn wait_used(a: &mut Asm, ring: Ring, idx: u32, top: &'static str, done: &'static str) {
    a.label(top)
        .load16(ring.used + 2)
        .cmp_eax(idx)
        .je(done)
        .pause()
        .jmp(top)
        .label(done);
}

/// VERSION_1 (bit 32), which every test guest's driver acks.
pub const VERSION_1: u64 = 1 << 32;
/// The magic value, "virt".
pub const MAGIC_VALUE: u32 = 0x7472_6976;

/// The start of every test guest's driver (virtio 1.2 §3.1.1) on the device whose
/// window is at `base` (left in `rdi`): identification, reset, ACKNOWLEDGE | DRIVER,
/// the offered features the driver needs, the driver's features, FEATURES_OK and its
/// check. A failed check jumps to its label.
pub struct Handshake {
    pub base: u32,
    pub device_id: u32,
    /// Jumped to on a bad magic value; `None`: not checked.
    pub bad_magic: Option<&'static str>,
    /// Jumped to on a version other than 2; `None`: not checked.
    pub bad_version: Option<&'static str>,
    /// Jumped to on another device id.
    pub wrong_device: &'static str,
    /// Feature bits the device must offer, each checked on its own, and where to jump
    /// when it does not.
    pub needs: &'static [(u32, &'static str)],
    /// The driver's features ([`VERSION_1`] included).
    pub acks: u64,
    /// Jumped to when the device refuses FEATURES_OK.
    pub refused: &'static str,
}

impl Handshake {
    pub fn emit(&self, a: &mut Asm) {
        a.mov_edi(self.base);
        if let Some(label) = self.bad_magic {
            a.load32_rdi(MAGIC).cmp_eax(MAGIC_VALUE).jne(label);
        }
        if let Some(label) = self.bad_version {
            a.load32_rdi(VERSION).cmp_eax(2).jne(label);
        }
        a.load32_rdi(DEVICE_ID)
            .cmp_eax(self.device_id)
            .jne(self.wrong_device)
            .store32_rdi(STATUS, 0)
            .store32_rdi(STATUS, 1)
            .store32_rdi(STATUS, 3);
        for &(bit, label) in self.needs {
            a.store32_rdi(DEVICE_FEATURES_SEL, bit / 32)
                .load32_rdi(DEVICE_FEATURES)
                .test_eax(1 << (bit % 32))
                .je(label);
        }
        a.store32_rdi(DRIVER_FEATURES_SEL, 1)
            .store32_rdi(DRIVER_FEATURES, (self.acks >> 32) as u32)
            .store32_rdi(DRIVER_FEATURES_SEL, 0)
            .store32_rdi(DRIVER_FEATURES, self.acks as u32)
            .store32_rdi(STATUS, 0xb)
            .load32_rdi(STATUS)
            .test_eax(8)
            .je(self.refused);
    }
}

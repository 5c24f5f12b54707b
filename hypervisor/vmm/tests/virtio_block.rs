//! A tiny guest drives our virtio-blk device over virtio-mmio by hand: it checks the
//! identification registers, the FLUSH feature and the capacity, negotiates
//! VERSION_1, places one split virtqueue in its memory, then writes one sector with a
//! pattern, reads it back into another buffer, flushes, and checks every status byte
//! and used length (QueueNotify writes that KVM turns into ioeventfd wake-ups of the
//! device thread). The host then finds the pattern in the image file.

mod common;

use std::time::Duration;

use cocoon_vmm::devices::virtio::block::{Disk, DiskError};
use cocoon_vmm::DriveSpec;
use common::asm::Asm;
use common::mmio::*;
use common::{assert_driver_ok, kvm_or_skip, raw_config, run};

const SECTORS: u32 = 64;
/// The sector the guest writes and reads back.
const SECTOR: u32 = 37;
const QSIZE: u32 = 16;
const RING: Ring = Ring::at(0x30_0000);
const HDR: u32 = 0x31_0000;
const WBUF: u32 = 0x31_1000;
const RBUF: u32 = 0x31_2000;
const STATUS: u32 = 0x31_3000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

const OK: u8 = 0x10;
const FAILURES: [(u8, &str); 14] = [
    (0x21, "bad magic"),
    (0x22, "bad version"),
    (0x23, "not a block device"),
    (0x24, "FLUSH or VERSION_1 not offered"),
    (0x25, "FEATURES_OK refused"),
    (0x26, "wrong capacity"),
    (0x27, "queue 0 too small"),
    (0x28, "device needs reset after DRIVER_OK"),
    (0x29, "write: bad status byte"),
    (0x2a, "write: bad used length"),
    (0x2b, "read: bad status byte"),
    (0x2c, "read: bad used length"),
    (0x2d, "read: data differs from what was written"),
    (0x2e, "flush failed or no used-buffer interrupt"),
];

/// The qword at index `i` of the pattern (positive: `store64` sign-extends).
fn pattern(i: u32) -> u32 {
    0x1234_0000 | (i * 0x0101)
}

/// Descriptor `index`: `len` bytes at `addr`, `flags`, chained to `next`.
fn desc(a: &mut Asm, index: u32, addr: u32, len: u32, flags: u16, next: u16) {
    let at = RING.desc + 16 * index;
    a.store64(at, addr)
        .store32(at + 8, len)
        .store16(at + 12, flags)
        .store16(at + 14, next);
}

/// A request header at `at`, a status word of all ones at `status`, and the chain
/// header → (data) → status from descriptor `first`, published in slot `slot`.
#[allow(clippy::too_many_arguments)]
fn request(
    a: &mut Asm,
    slot: u32,
    first: u32,
    type_: u32,
    at: u32,
    status: u32,
    data: Option<(u32, u16)>,
) {
    a.store32(at, type_)
        .store32(at + 4, 0)
        .store64(at + 8, SECTOR)
        .store32(status, 0xffff_ffff);
    let mut i = first;
    desc(a, i, at, 16, NEXT, (i + 1) as u16);
    i += 1;
    if let Some((buf, flags)) = data {
        desc(a, i, buf, 512, NEXT | flags, (i + 1) as u16);
        i += 1;
    }
    desc(a, i, status, 1, WRITE, 0);
    publish(a, RING, slot, first as u16);
}

#[rustfmt::skip]
fn driver() -> Vec<u8> {
    let mut a = Asm::new();
    // FLUSH (bit 9) and VERSION_1 (bit 32) offered and acked.
    Handshake {
        base: MMIO, device_id: 2, bad_magic: Some("f21"), bad_version: Some("f22"),
        wrong_device: "f23", needs: &[(9, "f24"), (32, "f24")], acks: VERSION_1 | 1 << 9,
        refused: "f25",
    }.emit(&mut a);
    // capacity (le64) at config offset 0.
    a.load32_rdi(CONFIG).cmp_eax(SECTORS).jne("f26")
        .load32_rdi(CONFIG + 4).cmp_eax(0).jne("f26");
    setup_queue(&mut a, 0, QSIZE, RING, "f27");
    a.store32_rdi(STATUS_REG, 0xf)
        .load32_rdi(STATUS_REG).test_eax(0x40).jne("f28");
    // The pattern, then OUT: header, WBUF (device-readable), status.
    for i in 0..64 {
        a.store64(WBUF + 8 * i, pattern(i));
    }
    request(&mut a, 0, 0, 1, HDR, STATUS, Some((WBUF, 0)));
    a.store32_rdi(QUEUE_NOTIFY, 0);
    wait_used(&mut a, RING, 1, "w", "w_done");
    // Only the status byte was written, and it is VIRTIO_BLK_S_OK.
    a.load32(STATUS).cmp_eax(0xffff_ff00).jne("f29")
        .load32(RING.used + 8).cmp_eax(1).jne("f2a");
    // IN: header, RBUF (device-writable), status.
    request(&mut a, 1, 3, 0, HDR + 0x100, STATUS + 0x10, Some((RBUF, WRITE)));
    a.store32_rdi(QUEUE_NOTIFY, 0);
    wait_used(&mut a, RING, 2, "r", "r_done");
    a.load32(STATUS + 0x10).cmp_eax(0xffff_ff00).jne("f2b")
        .load32(RING.used + 16).cmp_eax(513).jne("f2c");
    for i in 0..64 {
        a.load64(RBUF + 8 * i).cmp64(WBUF + 8 * i).jne("f2d");
    }
    // FLUSH: header, status.
    request(&mut a, 2, 6, 4, HDR + 0x200, STATUS + 0x20, None);
    a.store32_rdi(QUEUE_NOTIFY, 0);
    wait_used(&mut a, RING, 3, "f", "f_done");
    a.load32(STATUS + 0x20).cmp_eax(0xffff_ff00).jne("f2e")
        .load32_rdi(INTERRUPT_STATUS).test_eax(1).je("f2e")
        .store32_rdi(INTERRUPT_ACK, 1)
        .exit(OK);
    for (label, code) in [
        ("f21", 0x21), ("f22", 0x22), ("f23", 0x23), ("f24", 0x24), ("f25", 0x25),
        ("f26", 0x26), ("f27", 0x27), ("f28", 0x28), ("f29", 0x29), ("f2a", 0x2a),
        ("f2b", 0x2b), ("f2c", 0x2c), ("f2d", 0x2d), ("f2e", 0x2e),
    ] {
        a.label(label).exit(code);
    }
    a.finish()
}

/// The device status register (STATUS in `common::mmio`; renamed against our buffer).
const STATUS_REG: u32 = common::mmio::STATUS;

#[test]
fn guest_driver_writes_and_reads_back_a_sector() {
    if !kvm_or_skip("virtio-blk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    // 64 sectors and a partial one, which the capacity leaves out.
    std::fs::write(&image, vec![0u8; SECTORS as usize * 512 + 200]).unwrap();
    let drive = DriveSpec {
        path: image.clone(),
        read_only: false,
        id: None,
    };
    let mut config = raw_config(driver(), dir.path().join("serial.log"));
    config.drives = vec![drive.clone()];
    let out = run(config, Duration::from_secs(20));
    let exit = out
        .exit
        .clone()
        .expect("the guest driver finished within 20 s");
    assert_driver_ok(&exit, OK, &FAILURES);

    // The pattern is in the file at the sector's offset, and nowhere else.
    let file = std::fs::read(&image).unwrap();
    let want: Vec<u8> = (0..64)
        .flat_map(|i| u64::from(pattern(i)).to_le_bytes())
        .collect();
    let at = SECTOR as usize * 512;
    assert_eq!(&file[at..at + 512], &want[..]);
    assert_eq!(file.len(), SECTORS as usize * 512 + 200);
    assert!(file[..at].iter().chain(&file[at + 512..]).all(|&b| b == 0));

    let path = dir.path().join("metrics.json");
    out.vmm.metrics().write(&path, &[]).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let blk = &m["devices"][0];
    assert_eq!(blk["type"], "block", "{m}");
    assert_eq!(blk["requests"], 3, "{m}");
    assert_eq!(blk["write_bytes"], 512, "{m}");
    assert_eq!(blk["read_bytes"], 512, "{m}");
    assert_eq!(blk["flushes"], 1, "{m}");
    assert_eq!(blk["bad_requests"], 0, "{m}");
    assert_eq!(blk["transport"]["activations"], 1, "{m}");

    // The running VM holds the image's lock; stopping it lets go.
    assert!(matches!(Disk::open(&drive), Err(DiskError::Locked { .. })));
    out.vmm.stop();
    Disk::open(&drive).expect("the lock is released when the VM stops");
    eprintln!("virtio-blk guest: {:?}, {m}", out.elapsed);
}

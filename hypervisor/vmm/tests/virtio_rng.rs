//! A tiny guest drives our virtio-rng device over virtio-mmio by hand: it checks the
//! identification registers, negotiates VERSION_1, places one split virtqueue in its
//! memory, posts one writable 64-byte buffer, notifies, spins on the used index and
//! reports through the debug-exit port whether the buffer came back filled.

mod common;

use std::time::Duration;

use common::asm::Asm;
use common::mmio::*;
use common::{assert_driver_ok, kvm_or_skip, raw_config, run};
use vm_memory::{Bytes, GuestAddress};

/// Where the guest puts its queue (guest physical, identity-mapped).
const DESC: u32 = 0x30_0000;
const AVAIL: u32 = 0x30_1000;
const USED: u32 = 0x30_2000;
const BUF: u32 = 0x30_3000;
const BUF_LEN: u32 = 64;

const OK: u8 = 0x10;
const FAILURES: [(u8, &str); 10] = [
    (0x21, "bad magic"),
    (0x22, "bad version"),
    (0x23, "not an entropy device"),
    (0x24, "VERSION_1 not offered"),
    (0x25, "FEATURES_OK refused"),
    (0x26, "queue 0 has no size"),
    (0x27, "device needs reset after DRIVER_OK"),
    (0x28, "used length is not the buffer length"),
    (0x29, "no used-buffer interrupt status"),
    (0x2a, "buffer left all zero"),
];

#[rustfmt::skip]
fn driver() -> Vec<u8> {
    let mut a = Asm::new();
    // VERSION_1 (bit 32) offered and acked.
    Handshake {
        base: MMIO, device_id: 4, bad_magic: Some("f21"), bad_version: Some("f22"),
        wrong_device: "f23", needs: &[(32, "f24")], acks: VERSION_1, refused: "f25",
    }.emit(&mut a);
    // Queue 0: 16 entries at DESC/AVAIL/USED.
    a.store32_rdi(QUEUE_SEL, 0)
        .load32_rdi(QUEUE_NUM_MAX).cmp_eax(16).jb("f26")
        .store32_rdi(QUEUE_NUM, 16)
        .store32_rdi(QUEUE_DESC, DESC)
        .store32_rdi(QUEUE_DESC + 4, 0)
        .store32_rdi(QUEUE_AVAIL, AVAIL)
        .store32_rdi(QUEUE_AVAIL + 4, 0)
        .store32_rdi(QUEUE_USED, USED)
        .store32_rdi(QUEUE_USED + 4, 0)
        .store32_rdi(QUEUE_READY, 1)
        .store32_rdi(STATUS, 0xf)
        .load32_rdi(STATUS).test_eax(0x40).jne("f27")
        // Descriptor 0: BUF, 64 bytes, device-writable; avail ring: [0], idx 1.
        .store64(DESC, BUF)
        .store32(DESC + 8, BUF_LEN)
        .store32(DESC + 12, 2)
        .store16(AVAIL + 4, 0)
        .store16(AVAIL + 2, 1)
        .store32_rdi(QUEUE_NOTIFY, 0)
        // Spin until the device returns the buffer.
        .label("wait")
        .load16(USED + 2).cmp_eax(1).je("used")
        .pause().jmp("wait")
        .label("used")
        .load32(USED + 8).cmp_eax(BUF_LEN).jne("f28")
        .load32_rdi(INTERRUPT_STATUS).test_eax(1).je("f29")
        .store32_rdi(INTERRUPT_ACK, 1)
        // OR the 64 bytes together.
        .load64(BUF);
    for off in (8..BUF_LEN).step_by(8) {
        a.or64(BUF + off);
    }
    a.test_rax_rax().je("f2a").exit(OK);
    for (label, code) in [
        ("f21", 0x21), ("f22", 0x22), ("f23", 0x23), ("f24", 0x24), ("f25", 0x25),
        ("f26", 0x26), ("f27", 0x27), ("f28", 0x28), ("f29", 0x29), ("f2a", 0x2a),
    ] {
        a.label(label).exit(code);
    }
    a.finish()
}

#[test]
fn guest_driver_gets_entropy_through_a_virtqueue() {
    if !kvm_or_skip("virtio-rng") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = raw_config(driver(), dir.path().join("serial.log"));
    config.entropy = true;
    let out = run(config, Duration::from_secs(20));
    let exit = out
        .exit
        .clone()
        .expect("the guest driver finished within 20 s");
    assert_driver_ok(&exit, OK, &FAILURES);
    // The host sees the same: the used ring and a non-zero buffer.
    let mem = out.vmm.memory();
    let used_idx: u16 = mem.read_obj(GuestAddress(u64::from(USED) + 2)).unwrap();
    assert_eq!(used_idx, 1);
    let mut buf = [0u8; BUF_LEN as usize];
    mem.read_slice(&mut buf, GuestAddress(u64::from(BUF)))
        .unwrap();
    assert!(buf.iter().any(|&b| b != 0));
    // The metrics say the same: one activation, one request of BUF_LEN bytes, MMIO exits.
    let path = dir.path().join("metrics.json");
    out.vmm.metrics().write(&path, &[]).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rng = &m["devices"][0];
    assert_eq!(rng["type"], "rng", "{m}");
    assert_eq!(rng["requests"], 1, "{m}");
    assert_eq!(rng["bytes"], u64::from(BUF_LEN), "{m}");
    assert_eq!(rng["transport"]["activations"], 1, "{m}");
    assert!(m["exits"]["mmio"].as_u64().unwrap() > 0, "{m}");
    assert!(m["boot"]["first_guest_exit_us"].as_u64().is_some(), "{m}");
    eprintln!("virtio-rng guest: {:?}, {m}", out.elapsed);
}

//! A tiny guest drives our virtio-net device over virtio-mmio by hand, with a real tap
//! on the host (in a network namespace of the test's own): it posts an RX buffer,
//! waits for the host to configure the tap, sends an ARP request for the host's
//! address on the TX queue (a QueueNotify write KVM turns into an ioeventfd wake-up of
//! the device thread) and checks that the kernel's ARP reply lands in its buffer.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use cocoon_vmm::devices::virtio::net::MacAddr;
use cocoon_vmm::{NetSpec, VmExit};
use common::asm::Asm;
use common::mmio::*;
use common::{assert_driver_ok, kvm_or_skip, raw_config, CODE_ADDR};
use nix::sched::{unshare, CloneFlags};
use vm_memory::{Bytes, GuestAddress};

const GUEST_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x02];
const GUEST_IP: [u8; 4] = [10, 0, 0, 2];
const HOST_IP: [u8; 4] = [10, 0, 0, 1];
const QSIZE: u32 = 16;
const RX: Ring = Ring::at(0x30_0000);
const TX: Ring = Ring::at(0x30_4000);
const RX_BUF: u32 = 0x31_0000;
const RX_BUF_LEN: u32 = 2048;
/// The host writes 1 here once the tap has its address.
const GO: u32 = 0x32_0000;
/// The frame to send (virtio-net header and ARP request) rides along after the code.
const FRAME_OFFSET: usize = 0x1000;
const FRAME: u32 = CODE_ADDR as u32 + FRAME_OFFSET as u32;
const HDR: u32 = 12;

const OK: u8 = 0x10;
const FAILURES: [(u8, &str); 7] = [
    (0x21, "bad magic"),
    (0x22, "bad version"),
    (0x23, "not a net device"),
    (0x24, "FEATURES_OK refused"),
    (0x25, "a queue is too small"),
    (0x26, "device needs reset after DRIVER_OK"),
    (0x27, "the config space does not hold our MAC"),
];
const NOT_ARP_REPLY: u8 = 0x28;
const NO_INTERRUPT: u8 = 0x29;

/// A virtio-net header (all zero) and a broadcast "who has 10.0.0.1? tell 10.0.0.2".
fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; HDR as usize];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&HOST_IP);
    f
}

#[rustfmt::skip]
fn driver(frame_len: u32) -> Vec<u8> {
    let mut a = Asm::new();
    let mac_low = u32::from_le_bytes(GUEST_MAC[..4].try_into().unwrap());
    // VERSION_1 and MAC (bit 5).
    Handshake {
        base: MMIO, device_id: 1, bad_magic: Some("f21"), bad_version: Some("f22"),
        wrong_device: "f23", needs: &[], acks: VERSION_1 | 1 << 5, refused: "f24",
    }.emit(&mut a);
    a.load32_rdi(CONFIG).cmp_eax(mac_low).jne("f27");
    setup_queue(&mut a, 0, QSIZE, RX, "f25");
    setup_queue(&mut a, 1, QSIZE, TX, "f25");
    write_desc(&mut a, RX, 0, RX_BUF, RX_BUF_LEN, 2);
    publish(&mut a, RX, 0, 0);
    a.store32_rdi(STATUS, 0xf)
        .load32_rdi(STATUS).test_eax(0x40).jne("f26");
    // Wait for the host to set the tap up.
    a.label("go").load32(GO).cmp_eax(1).je("send").pause().jmp("go").label("send");
    write_desc(&mut a, TX, 0, FRAME, frame_len, 0);
    publish(&mut a, TX, 0, 0);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(&mut a, TX, 1, "tx", "tx_done");
    wait_used(&mut a, RX, 1, "rx", "rx_done");
    // EtherType ARP (08 06) and opcode reply (00 02), read little-endian.
    a.load16(RX_BUF + HDR + 12).cmp_eax(0x0608).jne("f28")
        .load16(RX_BUF + HDR + 20).cmp_eax(0x0200).jne("f28")
        .load32_rdi(INTERRUPT_STATUS).test_eax(1).je("f29")
        .store32_rdi(INTERRUPT_ACK, 1);
    a.exit(OK);
    for (label, code) in [
        ("f21", 0x21), ("f22", 0x22), ("f23", 0x23), ("f24", 0x24), ("f25", 0x25),
        ("f26", 0x26), ("f27", 0x27), ("f28", NOT_ARP_REPLY), ("f29", NO_INTERRUPT),
    ] {
        a.label(label).exit(code);
    }
    a.finish()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .expect("running ip")
        .status
        .success()
}

#[test]
fn guest_driver_gets_an_arp_reply_from_the_host() {
    if !kvm_or_skip("virtio-net") {
        return;
    }
    // This thread (and the VM's threads and the `ip` commands it starts) moves to a
    // namespace of its own: the tap and its address never touch the host's.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        eprintln!("SKIP virtio-net: no network namespace ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tap = format!("cnv{}", std::process::id());
    let frame = arp_request();
    let mut code = driver(frame.len() as u32);
    assert!(code.len() <= FRAME_OFFSET, "the driver outgrew its page");
    code.resize(FRAME_OFFSET, 0);
    code.extend_from_slice(&frame);
    let mut config = raw_config(code, dir.path().join("serial.log"));
    config.nets = vec![NetSpec {
        tap: tap.clone(),
        mac: Some(MacAddr(GUEST_MAC)),
    }];

    let start = Instant::now();
    let vmm = common::start(config);
    assert!(link_exists(&tap), "the VM created its tap");
    // No IPv6, so the kernel sends nothing of its own before the reply.
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1").ok();
    ip(&["addr", "add", "10.0.0.1/24", "dev", &tap]);
    ip(&["link", "set", "dev", &tap, "up"]);
    vmm.memory()
        .write_obj(1u32, GuestAddress(GO.into()))
        .unwrap();

    let exit = vmm
        .wait_timeout(Duration::from_secs(20))
        .expect("the guest driver finished");
    if let VmExit::DebugExit(code) = exit {
        assert_ne!(code, NOT_ARP_REPLY, "the first frame was no ARP reply");
        assert_ne!(code, NO_INTERRUPT, "no used-buffer interrupt status");
    }
    assert_driver_ok(&exit, OK, &FAILURES);
    eprintln!(
        "virtio-net guest: ARP round trip done in {:?}; {:?}",
        start.elapsed(),
        vmm.stats()
    );

    let metrics = vmm.metrics().snapshot();
    let net = &metrics["devices"][0];
    assert_eq!(net["type"], "net");
    assert_eq!(net["tap"], tap.as_str());
    assert_eq!(net["tx_packets"], 1);
    assert_eq!(net["tx_bytes"], frame.len() as u64 - u64::from(HDR));
    assert_eq!(net["rx_packets"], 1);
    assert_eq!(net["bad_descriptors"], 0);
    assert_eq!(net["transport"]["activations"], 1);
    let stats = vmm.stats();
    assert_eq!(vmm.stop(), VmExit::DebugExit(OK));
    assert!(!link_exists(&tap), "the tap is gone with the VM");
    // The QueueNotify write went to the ioeventfd, not through an exit: every MMIO
    // exit is one of the driver's other register accesses.
    assert_eq!(stats.mmio, 37, "{stats:?}");
}

//! A tiny guest drives our virtio-vsock device over virtio-mmio by hand, while a host
//! client on the hybrid socket connects to it: the guest posts an RX buffer, reads
//! the host's OP_REQUEST from it, answers OP_RESPONSE on the TX queue (a QueueNotify
//! write KVM turns into an ioeventfd wake-up of the device thread), then sends "hi\n".
//! The host sees `OK <port>\n` and then the bytes.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cocoon_vmm::{VmExit, VsockSpec};
use common::asm::Asm;
use common::mmio::*;
use common::{kvm_or_skip, raw_config};

const GUEST_CID: u32 = 3;
const HOST_CID: u32 = 2;
const GUEST_PORT: u32 = 1234;
const QSIZE: u32 = 16;
const RX: Ring = Ring::at(0x30_0000);
const TX: Ring = Ring::at(0x30_4000);
const EVQ: Ring = Ring::at(0x30_8000);
const RX_BUF: u32 = 0x31_0000;
const RX_BUF_LEN: u32 = 4096 + 44;
const TX_BUF: u32 = 0x32_0000;
const TX_BUF2: u32 = 0x32_1000;

const OK: u8 = 0x10;
const FAILURES: [(u8, &str); 8] = [
    (0x21, "bad magic"),
    (0x22, "bad version"),
    (0x23, "not a vsock device"),
    (0x24, "FEATURES_OK refused"),
    (0x25, "a queue is too small"),
    (0x26, "device needs reset after DRIVER_OK"),
    (0x27, "the RX packet is not a request for our port"),
    (0x28, "no used-buffer interrupt status"),
];

/// Writes a vsock header at `at`: from our port to the port the request came from,
/// with `op` and a payload of `len` bytes.
fn header(a: &mut Asm, at: u32, op: u16, len: u32) {
    a.store64(at, GUEST_CID)
        .store64(at + 8, HOST_CID)
        .store32(at + 16, GUEST_PORT)
        .load32(RX_BUF + 16)
        .store32_eax(at + 20)
        .store32(at + 24, len)
        .store16(at + 28, 1)
        .store16(at + 30, op)
        .store32(at + 32, 0)
        .store32(at + 36, 64 * 1024)
        .store32(at + 40, 0);
}

#[rustfmt::skip]
fn driver() -> Vec<u8> {
    let mut a = Asm::new();
    a.mov_edi(MMIO)
        .load32_rdi(MAGIC).cmp_eax(0x7472_6976).jne("f21")
        .load32_rdi(VERSION).cmp_eax(2).jne("f22")
        .load32_rdi(DEVICE_ID).cmp_eax(19).jne("f23")
        .store32_rdi(STATUS, 0)
        .store32_rdi(STATUS, 1)
        .store32_rdi(STATUS, 3)
        // VERSION_1 only (bit 0 of the high word).
        .store32_rdi(DRIVER_FEATURES_SEL, 1)
        .store32_rdi(DRIVER_FEATURES, 1)
        .store32_rdi(DRIVER_FEATURES_SEL, 0)
        .store32_rdi(DRIVER_FEATURES, 0)
        .store32_rdi(STATUS, 0xb)
        .load32_rdi(STATUS).test_eax(8).je("f24");
    setup_queue(&mut a, 0, QSIZE, RX, "f25");
    setup_queue(&mut a, 1, QSIZE, TX, "f25");
    setup_queue(&mut a, 2, QSIZE, EVQ, "f25");
    // One RX buffer, then DRIVER_OK.
    write_desc(&mut a, RX, 0, RX_BUF, RX_BUF_LEN, 2);
    publish(&mut a, RX, 0, 0);
    a.store32_rdi(STATUS, 0xf)
        .load32_rdi(STATUS).test_eax(0x40).jne("f26");
    // The host's request arrives in it.
    wait_used(&mut a, RX, 1, "rx", "rx_done");
    a.load16(RX_BUF + 30).cmp_eax(1).jne("f27")
        .load32(RX_BUF + 20).cmp_eax(GUEST_PORT).jne("f27")
        .load32_rdi(INTERRUPT_STATUS).test_eax(1).je("f28")
        .store32_rdi(INTERRUPT_ACK, 1);
    // Accept: OP_RESPONSE.
    header(&mut a, TX_BUF, 2, 0);
    write_desc(&mut a, TX, 0, TX_BUF, 44, 0);
    publish(&mut a, TX, 0, 0);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(&mut a, TX, 1, "tx1", "tx1_done");
    // Then three bytes: OP_RW "hi\n".
    header(&mut a, TX_BUF2, 5, 3);
    a.store16(TX_BUF2 + 44, u16::from_le_bytes(*b"hi"))
        .store16(TX_BUF2 + 46, u16::from(b'\n'));
    write_desc(&mut a, TX, 1, TX_BUF2, 47, 0);
    publish(&mut a, TX, 1, 1);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(&mut a, TX, 2, "tx2", "tx2_done");
    a.exit(OK);
    for (label, code) in [
        ("f21", 0x21), ("f22", 0x22), ("f23", 0x23), ("f24", 0x24),
        ("f25", 0x25), ("f26", 0x26), ("f27", 0x27), ("f28", 0x28),
    ] {
        a.label(label).exit(code);
    }
    a.finish()
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = vec![];
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            other => panic!("reading the handshake reply after {line:?}: {other:?}"),
        }
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn guest_driver_accepts_a_host_connection_and_sends_bytes() {
    if !kvm_or_skip("virtio-vsock") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let mut config = raw_config(driver(), dir.path().join("serial.log"));
    config.vsock = Some(VsockSpec {
        guest_cid: GUEST_CID.into(),
        uds_path: uds.clone(),
    });
    let start = Instant::now();
    let vmm = common::start(config);
    assert!(
        uds.exists(),
        "the hybrid socket exists once the VM is built"
    );

    let mut client = UnixStream::connect(&uds).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client
        .write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
        .unwrap();
    let reply = read_line(&mut client);
    assert!(reply.starts_with("OK "), "{reply:?}");
    let mut data = [0u8; 3];
    client.read_exact(&mut data).unwrap();
    assert_eq!(&data, b"hi\n");

    let exit = vmm
        .wait_timeout(Duration::from_secs(20))
        .expect("the guest driver finished");
    if let VmExit::DebugExit(code) = exit {
        if let Some((_, why)) = FAILURES.iter().find(|(c, _)| *c == code) {
            panic!("guest driver failed: {why}");
        }
    }
    assert_eq!(exit, VmExit::DebugExit(OK));
    eprintln!(
        "virtio-vsock guest: connect round trip done in {:?}; {:?}",
        start.elapsed(),
        vmm.stats()
    );
    let stats = vmm.stats();
    assert_eq!(vmm.stop(), VmExit::DebugExit(OK));
    assert!(
        !uds.exists(),
        "the hybrid socket is removed when the VM ends"
    );
    // The guest makes 46 register accesses besides its two QueueNotify writes, which
    // KVM hands to the ioeventfd without an exit.
    assert_eq!(stats.mmio, 46, "{stats:?}");
}

//! A tiny guest drives our virtio-vsock device over virtio-mmio by hand, while a host
//! client on the hybrid socket connects to it: the guest posts an RX buffer, reads
//! the host's OP_REQUEST from it, answers OP_RESPONSE on the TX queue (a QueueNotify
//! write KVM turns into an ioeventfd wake-up of the device thread), then sends "hi\n".
//! The host sees `OK <port>\n` and then the bytes.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cocoon_vmm::{VmExit, VsockSpec};
use common::asm::Asm;
use common::guest::{
    connect_and_expect_hi, header, EVQ, GUEST_CID, GUEST_PORT, QSIZE, RX, RX_BUF, RX_BUF_LEN, TX,
    TX_BUF, TX_BUF2,
};
use common::mmio::*;
use common::{assert_driver_ok, kvm_or_skip, raw_config};

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

#[rustfmt::skip]
fn driver() -> Vec<u8> {
    let mut a = Asm::new();
    // VERSION_1 only.
    Handshake {
        base: MMIO, device_id: 19, bad_magic: Some("f21"), bad_version: Some("f22"),
        wrong_device: "f23", needs: &[], acks: VERSION_1, refused: "f24",
    }.emit(&mut a);
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
    connect_and_expect_hi(&mut client);

    let exit = vmm
        .wait_timeout(Duration::from_secs(20))
        .expect("the guest driver finished");
    assert_driver_ok(&exit, OK, &FAILURES);
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

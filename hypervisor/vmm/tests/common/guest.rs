//! A test guest that drives a virtio-rng and a virtio-vsock device by hand, then
//! prints `ok` on the serial console and exits through the debug-exit port.
//!
//! It runs in long mode (raw code) and in 32-bit protected mode (PVH, see
//! [`super::pvh`]) alike. The rng part posts one 64-byte writable buffer and checks
//! that it comes back filled. The vsock part waits for a host connection to
//! `GUEST_PORT` (a client on the hybrid socket sends `CONNECT 1234\n`), accepts it and
//! sends `hi\n`. Any failed check exits with a code of [`FAILURES`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::asm::Asm;
use super::mmio::*;

pub const GUEST_CID: u32 = 3;
pub const GUEST_PORT: u32 = 1234;
/// The exit code when every check passed.
pub const OK: u8 = 0x10;
pub const FAILURES: [(u8, &str); 10] = [
    (0x21, "rng: bad magic"),
    (0x22, "rng: not an entropy device"),
    (0x23, "rng: FEATURES_OK refused"),
    (0x24, "rng: a queue is too small"),
    (0x25, "rng: the buffer came back short"),
    (0x31, "vsock: not a vsock device"),
    (0x32, "vsock: FEATURES_OK refused"),
    (0x33, "vsock: a queue is too small"),
    (0x34, "vsock: device needs reset after DRIVER_OK"),
    (0x35, "vsock: the RX packet is not a request for our port"),
];

/// What an exit code means.
pub fn failure(code: u8) -> Option<&'static str> {
    FAILURES.iter().find(|(c, _)| *c == code).map(|(_, w)| *w)
}

const HOST_CID: u32 = 2;
pub const QSIZE: u32 = 16;
const RNG_Q: Ring = Ring::at(0x28_0000);
const RNG_BUF: u32 = 0x2b_0000;
/// The vsock part's queues and buffers.
pub const RX: Ring = Ring::at(0x30_0000);
pub const TX: Ring = Ring::at(0x30_4000);
pub const EVQ: Ring = Ring::at(0x30_8000);
pub const RX_BUF: u32 = 0x31_0000;
pub const RX_BUF_LEN: u32 = 4096 + 44;
pub const TX_BUF: u32 = 0x32_0000;
pub const TX_BUF2: u32 = 0x32_1000;

/// A vsock header at `at`: from our port to the port the host's request (in the RX
/// buffer) came from.
pub fn header(a: &mut Asm, at: u32, op: u16, len: u32) {
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
fn rng(a: &mut Asm, base: u32) {
    // VERSION_1 only.
    Handshake {
        base, device_id: 4, bad_magic: Some("f21"), bad_version: None, wrong_device: "f22",
        needs: &[], acks: VERSION_1, refused: "f23",
    }.emit(a);
    setup_queue(a, 0, QSIZE, RNG_Q, "f24");
    write_desc(a, RNG_Q, 0, RNG_BUF, 64, 2);
    publish(a, RNG_Q, 0, 0);
    a.store32_rdi(STATUS, 0xf).store32_rdi(QUEUE_NOTIFY, 0);
    wait_used(a, RNG_Q, 1, "rng", "rng_done");
    // used ring: flags, idx, then {id: u32, len: u32}.
    a.load32(RNG_Q.used + 8).cmp_eax(64).jne("f25")
        .store32_rdi(INTERRUPT_ACK, 1);
}

#[rustfmt::skip]
fn vsock(a: &mut Asm, base: u32) {
    // VERSION_1 only.
    Handshake {
        base, device_id: 19, bad_magic: None, bad_version: None, wrong_device: "f31",
        needs: &[], acks: VERSION_1, refused: "f32",
    }.emit(a);
    setup_queue(a, 0, QSIZE, RX, "f33");
    setup_queue(a, 1, QSIZE, TX, "f33");
    setup_queue(a, 2, QSIZE, EVQ, "f33");
    write_desc(a, RX, 0, RX_BUF, RX_BUF_LEN, 2);
    publish(a, RX, 0, 0);
    a.store32_rdi(STATUS, 0xf)
        .load32_rdi(STATUS).test_eax(0x40).jne("f34");
    // The host's request arrives in the RX buffer.
    wait_used(a, RX, 1, "rx", "rx_done");
    a.load16(RX_BUF + 30).cmp_eax(1).jne("f35")
        .load32(RX_BUF + 20).cmp_eax(GUEST_PORT).jne("f35")
        .store32_rdi(INTERRUPT_ACK, 1);
    // Accept (OP_RESPONSE), then OP_RW "hi\n".
    header(a, TX_BUF, 2, 0);
    write_desc(a, TX, 0, TX_BUF, 44, 0);
    publish(a, TX, 0, 0);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(a, TX, 1, "tx1", "tx1_done");
    header(a, TX_BUF2, 5, 3);
    a.store16(TX_BUF2 + 44, u16::from_le_bytes(*b"hi"))
        .store16(TX_BUF2 + 46, u16::from(b'\n'));
    write_desc(a, TX, 1, TX_BUF2, 47, 0);
    publish(a, TX, 1, 1);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(a, TX, 2, "tx2", "tx2_done");
}

/// The driver, for an rng device at MMIO `rng_base` and a vsock device at
/// `vsock_base`.
pub fn rng_and_vsock(rng_base: u32, vsock_base: u32) -> Vec<u8> {
    let mut a = Asm::new();
    rng(&mut a, rng_base);
    vsock(&mut a, vsock_base);
    a.outb_str(0x3f8, b"ok\n").exit(OK);
    for (code, _) in FAILURES {
        a.label(label(code)).exit(code);
    }
    a.finish()
}

/// The host's side of the vsock part, on a client of the hybrid socket: asks for
/// [`GUEST_PORT`], expects `OK <port>\n`, then the guest's `hi\n`.
pub fn connect_and_expect_hi(client: &mut UnixStream) {
    client
        .write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
        .unwrap();
    let reply = read_line(client);
    assert!(reply.starts_with("OK "), "{reply:?}");
    let mut data = [0u8; 3];
    client.read_exact(&mut data).unwrap();
    assert_eq!(&data, b"hi\n");
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

fn label(code: u8) -> &'static str {
    match code {
        0x21 => "f21",
        0x22 => "f22",
        0x23 => "f23",
        0x24 => "f24",
        0x25 => "f25",
        0x31 => "f31",
        0x32 => "f32",
        0x33 => "f33",
        0x34 => "f34",
        _ => "f35",
    }
}

//! A tiny guest drives our virtio-fs device over virtio-mmio by hand, with a real
//! virtiofsd behind it: it sets up the high-priority and request queues, then sends
//! FUSE_INIT and a FUSE_LOOKUP of a file the test made. Its QueueNotify writes go to
//! the backend's kick eventfd through a KVM ioeventfd (datamatch = queue index), the
//! backend reads and writes the rings in the shared memfd guest memory, and its
//! used-buffer signal comes back as the VRING bit in InterruptStatus.
//!
//! And a backend that accepts the connection but never answers fails the build, under
//! the seccomp filters, instead of blocking it.

mod common;

use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cocoon_vmm::api::error_chain;
use cocoon_vmm::devices::virtio::fs::REPLY_DEADLINE;
use cocoon_vmm::seccomp::{self, ThreadKind};
use cocoon_vmm::{SharedFsSpec, VmExit, Vmm};
use common::asm::Asm;
use common::mmio::*;
use common::virtiofsd::Virtiofsd;
use common::{assert_driver_ok, kvm_or_skip, raw_config, seccomp_on};

const QSIZE: u32 = 16;
const HIPRIO: Ring = Ring::at(0x30_0000);
const REQ: Ring = Ring::at(0x30_4000);
const INIT_BUF: u32 = 0x31_0000;
const INIT_REPLY: u32 = 0x31_1000;
const LOOKUP_BUF: u32 = 0x32_0000;
const LOOKUP_REPLY: u32 = 0x32_1000;
const REPLY_LEN: u32 = 4096;
const FILE_SIZE: u32 = 12345;
const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;

const OK: u8 = 0x10;
const FAILURES: [(u8, &str); 8] = [
    (0x21, "bad magic"),
    (0x22, "bad version"),
    (0x23, "not a virtio-fs device"),
    (0x24, "FEATURES_OK refused"),
    (0x25, "a queue is too small"),
    (0x26, "device needs reset after DRIVER_OK"),
    (0x27, "FUSE_INIT failed or is not FUSE 7"),
    (0x28, "FUSE_LOOKUP failed or has the wrong size"),
];

/// A fuse_in_header at `at` (uid, gid, pid and the rest stay zero).
fn in_header(a: &mut Asm, at: u32, len: u32, opcode: u32, unique: u32, nodeid: u32) {
    a.store32(at, len)
        .store32(at + 4, opcode)
        .store64(at + 8, unique)
        .store64(at + 16, nodeid);
}

/// Descriptors `head` (the request, NEXT) and `head + 1` (the reply, WRITE).
fn chain(a: &mut Asm, head: u32, req: u32, req_len: u32, reply: u32) {
    write_desc(a, REQ, head, req, req_len, 1);
    a.store16(REQ.desc + 16 * head + 14, (head + 1) as u16);
    write_desc(a, REQ, head + 1, reply, REPLY_LEN, 2);
}

/// Spins until InterruptStatus has the VRING bit, then acknowledges it.
fn wait_vring_interrupt(a: &mut Asm, top: &'static str, done: &'static str) {
    a.label(top)
        .load32_rdi(INTERRUPT_STATUS)
        .test_eax(1)
        .jne(done)
        .pause()
        .jmp(top)
        .label(done)
        .store32_rdi(INTERRUPT_ACK, 1);
}

#[rustfmt::skip]
fn driver() -> Vec<u8> {
    let mut a = Asm::new();
    // VERSION_1 only.
    Handshake {
        base: MMIO, device_id: 26, bad_magic: Some("f21"), bad_version: Some("f22"),
        wrong_device: "f23", needs: &[], acks: VERSION_1, refused: "f24",
    }.emit(&mut a);
    setup_queue(&mut a, 0, QSIZE, HIPRIO, "f25");
    setup_queue(&mut a, 1, QSIZE, REQ, "f25");
    a.store32_rdi(STATUS, 0xf)
        .load32_rdi(STATUS).test_eax(0x40).jne("f26");

    // FUSE_INIT 7.31 on the request queue.
    in_header(&mut a, INIT_BUF, 56, FUSE_INIT, 1, 0);
    a.store32(INIT_BUF + 40, 7)
        .store32(INIT_BUF + 44, 31)
        .store32(INIT_BUF + 48, 0x2_0000)
        .store32(INIT_BUF + 52, 0);
    chain(&mut a, 0, INIT_BUF, 56, INIT_REPLY);
    publish(&mut a, REQ, 0, 0);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(&mut a, REQ, 1, "init", "init_done");
    // fuse_out_header.error == 0, fuse_init_out.major == 7.
    a.load32(INIT_REPLY + 4).cmp_eax(0).jne("f27")
        .load32(INIT_REPLY + 16).cmp_eax(7).jne("f27");
    wait_vring_interrupt(&mut a, "irq1", "irq1_done");

    // FUSE_LOOKUP "hello.txt" in the root (node 1).
    in_header(&mut a, LOOKUP_BUF, 50, FUSE_LOOKUP, 2, 1);
    a.store32(LOOKUP_BUF + 40, u32::from_le_bytes(*b"hell"))
        .store32(LOOKUP_BUF + 44, u32::from_le_bytes(*b"o.tx"))
        .store32(LOOKUP_BUF + 48, u32::from(b't'));
    chain(&mut a, 2, LOOKUP_BUF, 50, LOOKUP_REPLY);
    publish(&mut a, REQ, 1, 2);
    a.store32_rdi(QUEUE_NOTIFY, 1);
    wait_used(&mut a, REQ, 2, "lookup", "lookup_done");
    // error == 0; fuse_entry_out.attr.size (16 + 40 + 8) is the file's size.
    a.load32(LOOKUP_REPLY + 4).cmp_eax(0).jne("f28")
        .load32(LOOKUP_REPLY + 64).cmp_eax(FILE_SIZE).jne("f28");
    wait_vring_interrupt(&mut a, "irq2", "irq2_done");
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
fn guest_driver_talks_fuse_to_virtiofsd() {
    if !kvm_or_skip("virtio-fs") {
        return;
    }
    let Some(mut fsd) = Virtiofsd::start("virtio-fs") else {
        return;
    };
    std::fs::write(fsd.shared.join("hello.txt"), vec![b'x'; FILE_SIZE as usize]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = raw_config(driver(), dir.path().join("serial.log"));
    config.shared_fs = vec![SharedFsSpec {
        socket_path: fsd.socket.clone(),
        tag: "shared".into(),
    }];
    let vmm = common::start(config);
    let exit = vmm
        .wait_timeout(Duration::from_secs(20))
        .expect("the guest driver finished");
    assert_driver_ok(&exit, OK, &FAILURES);

    let metrics = vmm.metrics().snapshot();
    let fs = &metrics["devices"][0];
    assert_eq!(fs["type"], "fs", "{metrics}");
    assert_eq!(fs["activations"], 1, "{metrics}");
    assert_eq!(fs["backend_errors"], 0, "{metrics}");
    assert!(fs["interrupts"].as_u64().unwrap() >= 2, "{metrics}");
    // Both QueueNotify writes went to the kick eventfd through KVM: none exited to
    // the transport.
    assert_eq!(fs["transport"]["notify"], 0, "{metrics}");

    // Ending the VM hangs up on virtiofsd, which then exits.
    assert_eq!(vmm.stop(), VmExit::DebugExit(OK));
    let child = fsd.child.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "virtiofsd still runs");
        std::thread::sleep(Duration::from_millis(5));
    }
    fsd.kill();
}

#[test]
fn a_silent_backend_fails_the_build_under_the_filters() {
    if !kvm_or_skip("virtio-fs silent backend") {
        return;
    }
    seccomp_on();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts the connection and holds it, saying nothing, until the VMM hangs up.
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        }
    });
    let mut config = raw_config(vec![0xf4], dir.path().join("serial.log"));
    config.shared_fs = vec![SharedFsSpec {
        socket_path: socket.clone(),
        tag: "silent".into(),
    }];
    // Built as cocoon-vmm's main thread builds: under the build filter, so the
    // watchdog thread hangs up under its own filter stacked on that one.
    let (done, outcome) = mpsc::channel();
    std::thread::Builder::new()
        .name("build".into())
        .spawn(move || {
            seccomp::try_apply(ThreadKind::Build).expect("the build filter installs");
            let result = Vmm::start(config).map(drop).map_err(|e| error_chain(&e));
            done.send(result).unwrap();
        })
        .unwrap();
    // A guard against hanging, well past the deadline: not a measure of it.
    let patience = REPLY_DEADLINE * 12;
    let error = outcome
        .recv_timeout(patience)
        .expect("Vmm::start returned")
        .expect_err("the build fails");
    assert!(error.contains(&socket.display().to_string()), "{error}");
    assert!(error.contains("GET_FEATURES"), "{error}");
    assert!(error.contains("no answer within"), "{error}");
}

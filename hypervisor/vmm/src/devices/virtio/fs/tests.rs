//! virtio-fs through the mmio transport against a real virtiofsd, without KVM: a fake
//! driver writes the registers and the rings in memfd guest memory and hand-encodes
//! FUSE requests (protocol 7.x); virtiofsd serves a temporary directory. Queue
//! notifications take the transport's fallback path (the device writes the kick).
//!
//! Tests that need virtiofsd print why they are skipped when it is not installed
//! (`scripts/setup.sh` installs it).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::api::error_chain;
use crate::devices::virtio::mmio::CONFIG_SPACE_OFFSET;
use crate::devices::virtio::test_utils::{
    capture_log, negotiate, publish, r32, returns_within, setup_queue, transport, w32,
};
use crate::devices::virtio::MmioTransport;
use crate::vstate::memory;
use virtiofsd::Virtiofsd;

/// The virtiofsd the integration tests start, too.
#[path = "../../../../tests/common/virtiofsd.rs"]
mod virtiofsd;

const TAG: &str = "rootfs";
const SIZE: u16 = 16;
const REQUEST_QUEUE: u32 = 1;
const REQ_BUF: u64 = 0x10_0000;
const REPLY_BUF: u64 = 0x11_0000;
const REPLY_LEN: u32 = 4096;
/// Long enough for any healthy run; only stops a broken test from hanging.
const PATIENCE: Duration = Duration::from_secs(20);
/// The exchange deadline against the fake backend: short, so the tests that wait for
/// it are quick, and still far longer than a healthy answer takes.
const DEADLINE: Duration = Duration::from_secs(2);

// FUSE (include/uapi/linux/fuse.h).
const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;
const FUSE_ROOT_ID: u64 = 1;
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;
const ENOENT: i32 = 2;

/// The device's spec for `fsd`'s socket.
fn spec(fsd: &Virtiofsd) -> SharedFsSpec {
    SharedFsSpec {
        socket_path: fsd.socket.clone(),
        tag: TAG.into(),
    }
}

fn kicks() -> [EventFd; NUM_QUEUES] {
    [0, 1].map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
}

/// The driver side: registers through the transport, rings in guest memory.
struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    irq: EventFd,
    /// Where the queues' rings start (queue `q` at `base + q * 0x1_0000`).
    base: u64,
    avail: [u16; NUM_QUEUES],
    unique: u64,
}

impl Driver {
    fn new(device: VirtioFs, mem: GuestMemoryMmap) -> Driver {
        let (t, irq) = transport(device, mem.clone());
        Driver {
            t,
            mem,
            irq,
            base: 0x1_0000,
            avail: [0; NUM_QUEUES],
            unique: 0,
        }
    }

    fn w(&mut self, reg: u32, v: u32) {
        w32(&mut self.t, reg, v);
    }

    fn r(&mut self, reg: u32) -> u32 {
        r32(&mut self.t, reg)
    }

    fn ring(&self, q: u32) -> u64 {
        self.base + 0x1_0000 * u64::from(q)
    }

    /// Resets the device, then sets it up again (VERSION_1 only) with both queues
    /// of [`SIZE`] at fresh, zeroed rings from `base`.
    fn initialize(&mut self, base: u64) {
        self.base = base;
        self.avail = [0; NUM_QUEUES];
        negotiate(&mut self.t, 1 << VIRTIO_F_VERSION_1);
        for q in 0..NUM_QUEUES as u32 {
            let ring = self.ring(q);
            self.mem
                .write_slice(&[0u8; 0x3000], GuestAddress(ring))
                .unwrap();
            setup_queue(&mut self.t, q, QUEUE_SIZE, SIZE, ring);
        }
    }

    fn driver_ok(&mut self) {
        self.w(VIRTIO_MMIO_STATUS, 0xf);
    }

    /// Posts a two-descriptor chain on queue `q`: the request (device-readable) then
    /// the reply buffer (device-writable).
    fn post(&mut self, q: u32, request: &[u8]) {
        self.mem
            .write_slice(request, GuestAddress(REQ_BUF))
            .unwrap();
        self.mem
            .write_slice(&[0xaa; REPLY_LEN as usize], GuestAddress(REPLY_BUF))
            .unwrap();
        let desc = self.ring(q);
        // Descriptor 0: request, NEXT -> 1. Descriptor 1: reply, WRITE.
        self.mem.write_obj(REQ_BUF, GuestAddress(desc)).unwrap();
        self.mem
            .write_obj(request.len() as u32, GuestAddress(desc + 8))
            .unwrap();
        self.mem.write_obj(1u16, GuestAddress(desc + 12)).unwrap();
        self.mem.write_obj(1u16, GuestAddress(desc + 14)).unwrap();
        self.mem
            .write_obj(REPLY_BUF, GuestAddress(desc + 16))
            .unwrap();
        self.mem
            .write_obj(REPLY_LEN, GuestAddress(desc + 24))
            .unwrap();
        self.mem.write_obj(2u16, GuestAddress(desc + 28)).unwrap();
        publish(
            &self.mem,
            desc + 0x1000,
            SIZE,
            &mut self.avail[q as usize],
            0,
        );
    }

    fn used_idx(&self, q: u32) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.ring(q) + 0x2000 + 2))
            .unwrap()
    }

    /// The used element of the last request on queue `q`: (head, length).
    fn last_used(&self, q: u32) -> (u32, u32) {
        let slot = u64::from(self.used_idx(q).wrapping_sub(1) % SIZE);
        let at = self.ring(q) + 0x2000 + 4 + 8 * slot;
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// Sends a FUSE request on the request queue, waits for the used-buffer
    /// interrupt, acknowledges it and returns (out header error, unique, reply body).
    fn fuse(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> (i32, u64, Vec<u8>) {
        self.unique += 1;
        let unique = self.unique;
        let mut request = Vec::with_capacity(IN_HEADER_LEN + body.len());
        request.extend_from_slice(&((IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
        request.extend_from_slice(&opcode.to_le_bytes());
        request.extend_from_slice(&unique.to_le_bytes());
        request.extend_from_slice(&nodeid.to_le_bytes());
        // uid, gid, pid, total_extlen, padding
        request.extend_from_slice(&[0u8; 4 + 4 + 4 + 2 + 2]);
        assert_eq!(request.len(), IN_HEADER_LEN);
        request.extend_from_slice(body);

        let want = self.used_idx(REQUEST_QUEUE).wrapping_add(1);
        self.post(REQUEST_QUEUE, &request);
        self.w(VIRTIO_MMIO_QUEUE_NOTIFY, REQUEST_QUEUE);
        self.wait_interrupt();
        assert_eq!(self.used_idx(REQUEST_QUEUE), want, "one request answered");
        let status = self.r(VIRTIO_MMIO_INTERRUPT_STATUS);
        assert_ne!(status & VIRTIO_MMIO_INT_VRING, 0, "{status:#x}");
        self.w(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

        let (head, len) = self.last_used(REQUEST_QUEUE);
        assert_eq!(head, 0);
        assert!(len as usize >= OUT_HEADER_LEN && len <= REPLY_LEN, "{len}");
        let mut reply = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut reply, GuestAddress(REPLY_BUF))
            .unwrap();
        let out_len = u32::from_le_bytes(reply[0..4].try_into().unwrap());
        assert_eq!(out_len, len, "the out header's length is the used length");
        let error = i32::from_le_bytes(reply[4..8].try_into().unwrap());
        let got_unique = u64::from_le_bytes(reply[8..16].try_into().unwrap());
        (error, got_unique, reply[OUT_HEADER_LEN..].to_vec())
    }

    /// Waits for the interrupt line (the irqfd) to be raised.
    fn wait_interrupt(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.irq.read().is_err() {
            assert!(Instant::now() < deadline, "no interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// FUSE_INIT for protocol 7.31, no optional flags: returns the reply's
    /// (major, minor).
    fn fuse_init(&mut self) -> (u32, u32) {
        // fuse_init_in: major, minor, max_readahead, flags.
        let mut body = Vec::new();
        for v in [7u32, 31, 128 * 1024, 0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let (error, unique, out) = self.fuse(FUSE_INIT, 0, &body);
        assert_eq!(error, 0, "FUSE_INIT failed");
        assert_eq!(unique, self.unique);
        let major = u32::from_le_bytes(out[0..4].try_into().unwrap());
        let minor = u32::from_le_bytes(out[4..8].try_into().unwrap());
        (major, minor)
    }

    /// FUSE_LOOKUP of `name` in the root: the error, and the attributes' size.
    fn fuse_lookup(&mut self, name: &str) -> (i32, Option<u64>) {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        let (error, unique, out) = self.fuse(FUSE_LOOKUP, FUSE_ROOT_ID, &body);
        assert_eq!(unique, self.unique);
        if error != 0 {
            return (error, None);
        }
        // fuse_entry_out: nodeid, generation, entry_valid, attr_valid (u64 each),
        // entry_valid_nsec, attr_valid_nsec (u32 each), then fuse_attr: ino, size...
        let nodeid = u64::from_le_bytes(out[0..8].try_into().unwrap());
        assert_ne!(nodeid, 0, "a looked-up file has a node id");
        let size = u64::from_le_bytes(out[48..56].try_into().unwrap());
        (error, Some(size))
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn shared_memory() -> GuestMemoryMmap {
    memory::create_shared(4 << 20).unwrap()
}

fn write_file(dir: &Path, name: &str, len: usize) {
    let mut f = std::fs::File::create(dir.join(name)).unwrap();
    f.write_all(&vec![b'x'; len]).unwrap();
}

#[test]
fn fuse_init_and_lookup_reach_virtiofsd() {
    let Some(fsd) = Virtiofsd::start("fuse_init_and_lookup_reach_virtiofsd") else {
        return;
    };
    write_file(&fsd.shared, "hello.txt", 12345);
    let (fs, thread) = VirtioFs::new(&spec(&fsd), kicks()).unwrap();
    let metrics = fs.metrics();
    let mut d = Driver::new(fs, shared_memory());

    assert_eq!(d.r(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_FS);
    let features = d.r(VIRTIO_MMIO_DEVICE_FEATURES);
    // virtiofsd has both ring features, so they are passed through.
    let ring_features = (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);
    assert_eq!(features, ring_features);
    d.w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.r(VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1 only");
    let mut config = [0u8; CONFIG_SIZE + 4];
    for (i, chunk) in config.chunks_mut(4).enumerate() {
        let v = d.r(CONFIG_SPACE_OFFSET as u32 + 4 * i as u32);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    assert_eq!(&config[..TAG.len()], TAG.as_bytes());
    assert!(config[TAG.len()..TAG_MAX_LEN].iter().all(|&b| b == 0));
    assert_eq!(&config[TAG_MAX_LEN..TAG_MAX_LEN + 4], &1u32.to_le_bytes());
    assert_eq!(&config[CONFIG_SIZE..], &[0; 4], "nothing past the config");

    d.initialize(0x1_0000);
    d.driver_ok();
    assert!(d.t.is_activated());
    assert_eq!(metrics.activations.load(Ordering::Relaxed), 1);

    assert_eq!(d.fuse_init().0, 7, "FUSE major version 7");
    assert_eq!(d.fuse_lookup("hello.txt"), (0, Some(12345)));
    assert_eq!(d.fuse_lookup("missing.txt"), (-ENOENT, None));
    assert!(metrics.interrupts.load(Ordering::Relaxed) >= 3);
    assert_eq!(metrics.backend_errors.load(Ordering::Relaxed), 0);
    assert_eq!(d.t.metrics().notify.load(Ordering::Relaxed), 3);
    thread.stop();
}

#[test]
fn reset_stops_the_queues_and_the_device_activates_again() {
    let Some(fsd) = Virtiofsd::start("reset_stops_the_queues_and_the_device_activates_again")
    else {
        return;
    };
    write_file(&fsd.shared, "a", 7);
    let (fs, _thread) = VirtioFs::new(&spec(&fsd), kicks()).unwrap();
    let metrics = fs.metrics();
    let mut d = Driver::new(fs, shared_memory());
    d.initialize(0x1_0000);
    d.driver_ok();
    assert_eq!(d.fuse_init().0, 7);
    assert_eq!(d.fuse_lookup("a"), (0, Some(7)));

    // Reset, then the rings somewhere else: the backend must use the new ones.
    d.initialize(0x8_0000);
    assert_eq!(metrics.resets.load(Ordering::Relaxed), 1);
    d.driver_ok();
    assert!(d.t.is_activated());
    assert_eq!(d.r(VIRTIO_MMIO_STATUS), 0xf);
    assert_eq!(metrics.activations.load(Ordering::Relaxed), 2);
    // A fresh FUSE session (RESET_DEVICE): INIT again, then a lookup.
    assert_eq!(d.fuse_init().0, 7);
    assert_eq!(d.fuse_lookup("a"), (0, Some(7)));
    assert_eq!(
        d.used_idx(REQUEST_QUEUE),
        2,
        "the new ring counts from zero"
    );
    assert_eq!(metrics.backend_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn a_killed_backend_is_counted_and_the_device_needs_a_reset() {
    let Some(mut fsd) =
        Virtiofsd::start("a_killed_backend_is_counted_and_the_device_needs_a_reset")
    else {
        return;
    };
    let (fs, thread) = VirtioFs::new(&spec(&fsd), kicks()).unwrap();
    let metrics = fs.metrics();
    let mut d = Driver::new(fs, shared_memory());
    d.initialize(0x1_0000);
    d.driver_ok();
    assert_eq!(d.fuse_init().0, 7);

    fsd.kill();
    wait_for("the hang-up being counted", || {
        metrics.backend_errors.load(Ordering::Relaxed) == 1
    });
    // Counted once only, and after the device asked for a reset.
    assert_eq!(d.r(VIRTIO_MMIO_STATUS), 0xf | VIRTIO_CONFIG_S_NEEDS_RESET);
    assert_ne!(
        d.r(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG,
        0,
        "a configuration change interrupt tells the driver"
    );
    // The guest carries on regardless: nothing answers, nothing breaks.
    d.post(REQUEST_QUEUE, &[0; IN_HEADER_LEN]);
    d.w(VIRTIO_MMIO_QUEUE_NOTIFY, REQUEST_QUEUE);
    assert_eq!(d.used_idx(REQUEST_QUEUE), 1);

    // A reset clears NEEDS_RESET; activating again fails, which the status shows.
    d.initialize(0x1_0000);
    assert_eq!(d.r(VIRTIO_MMIO_STATUS), 0xb);
    d.driver_ok();
    assert!(!d.t.is_activated());
    assert_ne!(d.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(d.t.metrics().activate_failures.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.activations.load(Ordering::Relaxed), 1);
    thread.stop();
}

#[test]
fn private_guest_memory_fails_activation() {
    let Some(fsd) = Virtiofsd::start("private_guest_memory_fails_activation") else {
        return;
    };
    let (fs, _thread) = VirtioFs::new(&spec(&fsd), kicks()).unwrap();
    let metrics = fs.metrics();
    let private = memory::create(4 << 20).unwrap();
    let mut d = Driver::new(fs, private);
    d.initialize(0x1_0000);
    d.driver_ok();
    assert!(!d.t.is_activated());
    assert_ne!(d.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(metrics.backend_errors.load(Ordering::Relaxed), 1);
}

#[test]
fn ending_the_thread_hangs_up_on_the_backend() {
    let Some(mut fsd) = Virtiofsd::start("ending_the_thread_hangs_up_on_the_backend") else {
        return;
    };
    let (fs, thread) = VirtioFs::new(&spec(&fsd), kicks()).unwrap();
    thread.stop();
    // virtiofsd serves one connection: it exits once we hang up.
    let child = fsd.child.as_mut().unwrap();
    wait_for("virtiofsd exiting", || child.try_wait().unwrap().is_some());
    drop(fs);
}

#[test]
fn a_missing_socket_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-listens.sock");
    let spec = SharedFsSpec {
        socket_path: socket.clone(),
        tag: TAG.into(),
    };
    let error = VirtioFs::new(&spec, kicks()).err().expect("no backend");
    let line = error_chain(&error);
    assert!(line.contains(&socket.display().to_string()), "{line}");
    assert!(
        matches!(
            &error,
            FsError::Backend(BackendError::Connect { path, .. }) if *path == socket
        ),
        "{line}"
    );
}

#[test]
fn bad_tags_are_refused_before_connecting() {
    // No socket exists: a tag check that came after connecting would fail differently.
    for tag in [String::new(), "x".repeat(37), "a\0b".into()] {
        let spec = SharedFsSpec {
            socket_path: "/nonexistent/fs.sock".into(),
            tag: tag.clone(),
        };
        let error = VirtioFs::new(&spec, kicks()).err().expect("refused");
        assert!(
            matches!(&error, FsError::Tag { tag: t, .. } if *t == tag),
            "{tag:?}: {error}"
        );
    }
    assert_eq!(check_tag(&"x".repeat(36)), Ok(()));
    assert_eq!(check_tag("é"), Ok(()));
}

// vhost-user (docs/interop/vhost-user.rst): the requests the fake backend tells apart,
// and the header flags.
const SET_OWNER: u32 = 3;
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const GET_VRING_BASE: u32 = 11;
const GET_PROTOCOL_FEATURES: u32 = 15;
const GET_QUEUE_NUM: u32 = 17;
const VERSION_1_FLAG: u32 = 0x1;
const REPLY_FLAG: u32 = 0x4;
const NEED_REPLY_FLAG: u32 = 0x8;
/// VIRTIO_F_VERSION_1 and VHOST_USER_F_PROTOCOL_FEATURES.
const FAKE_FEATURES: u64 = (1 << 32) | (1 << 30);
/// VHOST_USER_PROTOCOL_F_MQ and _REPLY_ACK.
const FAKE_PROTOCOL: u64 = (1 << 0) | (1 << 3);

/// What the fake backend does once the request it waits for comes.
#[derive(Clone, Copy)]
enum Then {
    /// Answers neither it nor anything after it: it reads on, silent, until the
    /// connection ends.
    Stall,
    /// Closes the connection (unanswered).
    HangUp,
}

/// A request no frontend sends: the fake backend answers everything.
const NO_REQUEST: u32 = 0;

/// A vhost-user backend in the test: it accepts one connection and answers like
/// virtiofsd (VERSION_1; protocol features MQ with two queues and REPLY_ACK) until
/// request `at` comes; `then` says what it does then.
struct FakeBackend {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl FakeBackend {
    fn start(at: u32, then: Then) -> FakeBackend {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fake-virtiofsd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                serve(stream, at, then);
            }
        });
        FakeBackend { _dir: dir, socket }
    }

    fn spec(&self) -> SharedFsSpec {
        SharedFsSpec {
            socket_path: self.socket.clone(),
            tag: TAG.into(),
        }
    }
}

fn serve(mut stream: UnixStream, at: u32, then: Then) {
    let mut stalled = false;
    loop {
        let mut header = [0u8; 12];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let word = |i: usize| u32::from_le_bytes(header[4 * i..4 * i + 4].try_into().unwrap());
        let (request, flags, size) = (word(0), word(1), word(2));
        // The body; attached fds (memory, eventfds) are dropped by a plain read.
        let mut body = vec![0u8; size as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        stalled |= request == at;
        match then {
            _ if !stalled => {}
            Then::Stall => continue,
            Then::HangUp => return,
        }
        let reply: Option<Vec<u8>> = match request {
            GET_FEATURES => Some(FAKE_FEATURES.to_le_bytes().to_vec()),
            GET_PROTOCOL_FEATURES => Some(FAKE_PROTOCOL.to_le_bytes().to_vec()),
            GET_QUEUE_NUM => Some(2u64.to_le_bytes().to_vec()),
            // struct vhost_vring_state: the index asked for, its next available index.
            GET_VRING_BASE => Some([&body[..4], &[0u8; 4]].concat()),
            // Everything else is acknowledged (success) when asked to.
            _ if flags & NEED_REPLY_FLAG != 0 => Some(0u64.to_le_bytes().to_vec()),
            _ => None,
        };
        if let Some(reply) = reply {
            let mut out = Vec::with_capacity(12 + reply.len());
            out.extend_from_slice(&request.to_le_bytes());
            out.extend_from_slice(&(VERSION_1_FLAG | REPLY_FLAG).to_le_bytes());
            out.extend_from_slice(&(reply.len() as u32).to_le_bytes());
            out.extend_from_slice(&reply);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}

#[test]
fn a_backend_that_never_answers_fails_the_build_naming_the_socket() {
    // It accepts the connection and says nothing: the handshake's first question
    // (GET_FEATURES, after SET_OWNER, which needs no answer) is never answered.
    let fake = FakeBackend::start(SET_OWNER, Then::Stall);
    let spec = fake.spec();
    let error = returns_within("VirtioFs::with_deadline", PATIENCE, move || {
        VirtioFs::with_deadline(&spec, kicks(), DEADLINE).err()
    })
    .expect("the build fails");
    let line = error_chain(&error);
    assert!(line.contains(&fake.socket.display().to_string()), "{line}");
    assert!(line.contains("GET_FEATURES"), "{line}");
    assert!(
        matches!(
            &error,
            FsError::Backend(BackendError::Timeout { request: "GET_FEATURES", path, after })
                if *path == fake.socket && *after == DEADLINE
        ),
        "{line}"
    );
}

#[test]
fn a_backend_that_stalls_at_activation_fails_the_device() {
    // The handshake is answered; SET_FEATURES, the activation's first request, is not.
    let fake = FakeBackend::start(SET_FEATURES, Then::Stall);
    let (fs, _thread) = VirtioFs::with_deadline(&fake.spec(), kicks(), DEADLINE).unwrap();
    let metrics = fs.metrics();
    let mut d = Driver::new(fs, shared_memory());
    d.initialize(0x1_0000);
    // DRIVER_OK activates the device on this (the vCPU's) thread, which must return.
    let mut d = returns_within("DRIVER_OK", PATIENCE, move || {
        d.w(VIRTIO_MMIO_STATUS, 0xf);
        d
    });
    assert!(!d.t.is_activated());
    assert_ne!(d.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(d.t.metrics().activate_failures.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.activations.load(Ordering::Relaxed), 0);
    assert!(metrics.backend_errors.load(Ordering::Relaxed) >= 1);
    // The device stays failed: activating again fails at once.
    d.initialize(0x1_0000);
    d.driver_ok();
    assert!(!d.t.is_activated());
    assert_eq!(d.t.metrics().activate_failures.load(Ordering::Relaxed), 2);
}

#[test]
fn a_backend_that_stalls_at_reset_fails_the_device() {
    // Everything is answered up to the reset's GET_VRING_BASE.
    let fake = FakeBackend::start(GET_VRING_BASE, Then::Stall);
    let (fs, _thread) = VirtioFs::with_deadline(&fake.spec(), kicks(), DEADLINE).unwrap();
    let metrics = fs.metrics();
    let mut d = Driver::new(fs, shared_memory());
    d.initialize(0x1_0000);
    d.driver_ok();
    assert!(d.t.is_activated());
    // The reset (status 0) runs on this thread too, and must return.
    let mut d = returns_within("the reset", PATIENCE, move || {
        d.w(VIRTIO_MMIO_STATUS, 0);
        d
    });
    assert_eq!(metrics.resets.load(Ordering::Relaxed), 1);
    assert!(metrics.backend_errors.load(Ordering::Relaxed) >= 1);
    d.initialize(0x1_0000);
    d.driver_ok();
    assert!(!d.t.is_activated(), "the backend is gone");
    assert_ne!(d.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

/// The transport's log line for the failed activation in `log`.
fn activation_failure(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("virtio device activation failed"))
        .unwrap_or_else(|| panic!("no activation failure in {log:?}"))
}

#[test]
fn a_failed_request_is_reported_with_its_cause() {
    let fake = FakeBackend::start(SET_FEATURES, Then::HangUp);
    let (fs, _thread) = VirtioFs::with_deadline(&fake.spec(), kicks(), DEADLINE).unwrap();
    let mut d = Driver::new(fs, shared_memory());
    d.initialize(0x1_0000);
    let ((), log) = capture_log(|| d.w(VIRTIO_MMIO_STATUS, 0xf));
    assert!(!d.t.is_activated());
    // The device, where it is, the request, the socket, and then vhost's cause.
    let line = activation_failure(&log);
    let request = format!("SET_FEATURES on {}: vhost-user: ", fake.socket.display());
    for want in ["device=\"fs\"", "mmio_base=0x", &request] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
}

#[test]
fn private_guest_memory_is_reported_with_the_socket() {
    let fake = FakeBackend::start(NO_REQUEST, Then::Stall);
    let (fs, _thread) = VirtioFs::with_deadline(&fake.spec(), kicks(), DEADLINE).unwrap();
    let mut d = Driver::new(fs, memory::create(4 << 20).unwrap());
    d.initialize(0x1_0000);
    let ((), log) = capture_log(|| d.w(VIRTIO_MMIO_STATUS, 0xf));
    assert!(!d.t.is_activated());
    let line = activation_failure(&log);
    let want = format!(
        "is not shareable with the vhost-user backend on {}",
        fake.socket.display()
    );
    assert!(line.contains(&want), "{want:?} not in {line}");
}

#[test]
fn build_errors_name_the_tag() {
    let error = FsError::Thread {
        tag: TAG.into(),
        source: std::io::Error::from_raw_os_error(libc::EAGAIN),
    };
    assert!(error_chain(&error).starts_with("virtio-fs \"rootfs\": starting"));
    let error = FsError::EventFd {
        tag: TAG.into(),
        source: std::io::Error::from_raw_os_error(libc::EMFILE),
    };
    assert!(error_chain(&error).starts_with("virtio-fs \"rootfs\": creating"));
}

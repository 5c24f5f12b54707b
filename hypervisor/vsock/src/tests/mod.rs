//! Device tests without a VM: a fake guest (`guest.rs`) on real virtqueues, real unix
//! sockets for the host side.

mod connect;
mod flow;
mod fuzz;
mod guest;
mod shutdown;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use self::guest::{FakeGuest, GUEST_CID};
use crate::proto::Op;
use crate::{VsockConfig, VsockDevice};

/// A device with its sockets in a temp dir, and a guest.
pub(crate) struct Env {
    pub(crate) dir: TempDir,
    pub(crate) uds: PathBuf,
    pub(crate) dev: VsockDevice,
    pub(crate) guest: FakeGuest,
}

impl Env {
    pub(crate) fn new() -> Env {
        Env::with(|_| {})
    }

    pub(crate) fn with(tune: impl FnOnce(&mut VsockConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut cfg = VsockConfig::new(GUEST_CID, &uds);
        tune(&mut cfg);
        let dev = VsockDevice::new(cfg).unwrap();
        // RX buffers are posted by the first `FakeGuest::step`.
        let guest = FakeGuest::new();
        Env {
            dir,
            uds,
            dev,
            guest,
        }
    }

    /// `<uds>_<port>`.
    pub(crate) fn port_path(&self, port: u32) -> PathBuf {
        self.dir.path().join(format!("v.sock_{port}"))
    }

    /// A host client that has sent `CONNECT <port>\n` (nonblocking).
    pub(crate) fn client(&self, port: u32) -> UnixStream {
        let mut c = UnixStream::connect(&self.uds).unwrap();
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        c.set_nonblocking(true).unwrap();
        c
    }

    /// Host-initiated connection to guest `port`, accepted by the guest: (client, host port).
    pub(crate) fn connected_client(&mut self, port: u32) -> (UnixStream, u32) {
        let mut c = self.client(port);
        let (req, _) = self
            .guest
            .expect(&mut self.dev, |h| h.op() == Some(Op::Request));
        assert_eq!(req.dst_port, port);
        self.guest
            .send(FakeGuest::hdr(Op::Response, port, req.src_port), &[]);
        let line = self.read_line(&mut c);
        assert_eq!(line, format!("OK {}\n", req.src_port));
        (c, req.src_port)
    }

    /// Reads exactly `n` bytes from a nonblocking stream while running the device.
    pub(crate) fn read_n(&mut self, s: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut out = vec![];
        self.guest.run_until(&mut self.dev, |_, _| {
            let mut buf = vec![0u8; n - out.len()];
            match s.read(&mut buf) {
                Ok(0) => panic!("unexpected EOF after {} bytes", out.len()),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            out.len() == n
        });
        out
    }

    /// Reads a line one byte at a time, as a hybrid-vsock client must.
    pub(crate) fn read_line(&mut self, s: &mut UnixStream) -> String {
        let mut line = vec![];
        while line.last() != Some(&b'\n') {
            line.extend(self.read_n(s, 1));
        }
        String::from_utf8(line).unwrap()
    }

    /// Runs the device until `s` reports EOF (or an error such as a reset); returns the
    /// bytes read before it.
    pub(crate) fn read_to_eof(&mut self, s: &mut UnixStream) -> Vec<u8> {
        let mut out = vec![];
        self.guest.run_until(&mut self.dev, |_, _| {
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => true,
                Ok(k) => {
                    out.extend_from_slice(&buf[..k]);
                    false
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(_) => true,
            }
        });
        out
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        self.guest.run_for(&mut self.dev, d);
    }
}

//! Guest-side traffic: packets the guest sent (TX queue) and the next packet for it (RX).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use tracing::debug;

use super::{Muxer, Slot};
use crate::csm::{ConnKey, Connection};
use crate::metrics::Metrics;
use crate::proto::{Header, Op, HOST_CID, TYPE_STREAM};

impl Muxer {
    /// Handles one packet from the guest. `data` is an RW packet's payload (already checked
    /// to be `hdr.len` bytes), empty for other operations.
    pub(crate) fn send_pkt(&mut self, hdr: &Header, data: &[u8]) {
        if !self.addressed_to_us(hdr) {
            return;
        }
        let now = Instant::now();
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.type_ != TYPE_STREAM {
            Metrics::inc(&self.metrics.protocol_violations);
            return self.refuse(hdr);
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.on_guest_packet(hdr, data, now);
            return self.sync(key);
        }
        match hdr.op() {
            Some(Op::Request) => self.guest_connect(hdr, key),
            Some(Op::Rst) => {}
            _ => self.refuse(hdr),
        }
    }

    /// A packet whose payload could not be read (malformed chain, oversized length): the
    /// connection it names, if any, is reset.
    pub(crate) fn reject_pkt(&mut self, hdr: &Header) {
        if !self.addressed_to_us(hdr) {
            return;
        }
        Metrics::inc(&self.metrics.protocol_violations);
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.abort();
            return self.sync(key);
        }
        if hdr.op() != Some(Op::Rst) {
            self.refuse(hdr);
        }
    }

    /// The source must be our guest and the destination the host; anything else is
    /// dropped without a reply (a reply would go to an address the guest does not own).
    fn addressed_to_us(&self, hdr: &Header) -> bool {
        let ok = hdr.src_cid == self.cfg.guest_cid && hdr.dst_cid == HOST_CID;
        if !ok {
            Metrics::inc(&self.metrics.protocol_violations);
        }
        ok
    }

    /// Answers `hdr` with an RST that belongs to no connection.
    fn refuse(&mut self, hdr: &Header) {
        if hdr.op() == Some(Op::Rst) {
            return;
        }
        if !self.control.push(hdr.reply(Op::Rst)) {
            Metrics::inc(&self.metrics.control_dropped);
        }
    }

    /// The guest connects to host port P: connect to `<uds_path>_<P>`.
    fn guest_connect(&mut self, hdr: &Header, key: ConnKey) {
        if self.conns.len() >= self.cfg.max_connections {
            debug!(
                port = hdr.dst_port,
                "too many connections; refusing guest connect"
            );
            return self.refuse(hdr);
        }
        let mut path = self.cfg.uds_path.clone().into_os_string().into_vec();
        path.extend_from_slice(format!("_{}", hdr.dst_port).as_bytes());
        let path = OsString::from_vec(path);
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                debug!(port = hdr.dst_port, "guest connect refused: {e}");
                return self.refuse(hdr);
            }
        };
        let conn = Connection::guest_initiated(stream, key, hdr, &self.cfg, self.metrics.clone());
        debug!(
            local_port = key.local_port,
            peer_port = key.peer_port,
            "guest connected"
        );
        let token = self.new_token(Slot::Conn(key));
        self.conn_tokens.insert(key, token);
        self.conns.insert(key, conn);
        self.sync(key);
    }

    /// The next packet for the guest, with at most `buf.len()` payload bytes put in `buf`:
    /// connection-less replies first, then connections in turn.
    pub(crate) fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.control.pop() {
            return Some((h, 0));
        }
        let now = Instant::now();
        // Each scheduled connection is asked once; one with nothing to send now drops out
        // (or goes to the back if it still has work for a larger buffer).
        for _ in 0..self.rx_sched.len() {
            let key = self.rx_sched.pop()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let out = conn.next_packet(buf, now);
            let pkt = out.map(|o| (conn.header(&o, self.cfg.guest_cid), o.len));
            self.sync(key);
            if pkt.is_some() {
                return pkt;
            }
        }
        None
    }

    /// A packet from `next_rx` could not be written to the guest's buffer: its connection
    /// (if any) has lost bytes and must be reset.
    pub(crate) fn rx_failed(&mut self, hdr: &Header) {
        let key = ConnKey {
            local_port: hdr.src_port,
            peer_port: hdr.dst_port,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.abort();
            self.sync(key);
        }
    }
}

/// Connects a unix stream without blocking: a host listener whose backlog is full
/// refuses at once (`EAGAIN`) rather than stalling the device.
fn connect_nonblocking(path: &Path) -> nix::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(std::os::unix::io::AsRawFd::as_raw_fd(&fd), &addr)?;
    Ok(UnixStream::from(fd))
}

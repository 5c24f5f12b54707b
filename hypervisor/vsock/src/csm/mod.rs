//! One vsock connection: the virtio-vsock state machine and credit-based flow control,
//! over the host unix stream it owns. Pure logic plus reads/writes on that stream; the
//! muxer does the epoll bookkeeping and builds the guest-facing headers.

mod credit;
mod host;
mod txbuf;

use std::net::Shutdown;

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use self::credit::Credit;
use self::txbuf::TxBuf;
use crate::config::VsockConfig;
use crate::metrics::Metrics;
use crate::proto::{Header, Op, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// A connection's identity: (host-side port, guest-side port).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct ConnKey {
    pub(crate) local_port: u32,
    pub(crate) peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated; REQUEST owed or sent, waiting for the guest's RESPONSE.
    Connecting,
    /// Data may flow (subject to the shutdown flags).
    Established,
    /// Nothing more to send; the muxer removes the connection.
    Dead,
}

/// Control packets owed to the guest.
#[derive(Debug, Default)]
struct Owed {
    rst: bool,
    request: bool,
    response: bool,
    shutdown: u32,
    credit_update: bool,
    credit_request: bool,
}

/// What the host side of the stream has told us.
#[derive(Debug, Default)]
struct HostSide {
    /// Epoll said readable and no read has hit `WouldBlock` since.
    readable: bool,
    /// A read returned 0.
    eof: bool,
    /// Epoll said HUP: the stream is closed both ways; it is off epoll from now on.
    hup: bool,
    /// We shut the stream's write half (the guest will send no more).
    write_shut: bool,
}

/// A packet for the guest, less its addresses (see [`Connection::header`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) op: Op,
    pub(crate) flags: u32,
    /// Payload length; the payload is in the buffer given to [`Connection::next_packet`].
    pub(crate) len: usize,
    buf_alloc: u32,
    fwd_cnt: u32,
}

pub(crate) struct Connection {
    stream: UnixStream,
    key: ConnKey,
    state: State,
    credit: Credit,
    tx_buf: TxBuf,
    owe: Owed,
    host: HostSide,
    /// Shutdown flags we have sent to the guest.
    sent_shutdown: u32,
    /// Shutdown flags the guest has sent.
    peer_shutdown: u32,
    /// A CREDIT_REQUEST went out and the guest's credit has not changed since.
    credit_requested: bool,
    /// Connect or shutdown timeout.
    deadline: Option<Instant>,
    shutdown_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The epoll interest the muxer registered for `stream`, if registered.
    pub(crate) registered: Option<EventSet>,
}

impl Connection {
    /// A connection the host asked for: owes the guest a REQUEST, waits `connect_timeout`.
    pub(crate) fn host_initiated(
        stream: UnixStream,
        key: ConnKey,
        cfg: &VsockConfig,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> Self {
        let mut c = Connection::new(stream, key, cfg, metrics, State::Connecting);
        c.owe.request = true;
        c.deadline = Some(now + cfg.connect_timeout);
        c
    }

    /// A connection the guest asked for (`req` is its REQUEST) that the host accepted.
    pub(crate) fn guest_initiated(
        stream: UnixStream,
        key: ConnKey,
        req: &Header,
        cfg: &VsockConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut c = Connection::new(stream, key, cfg, metrics, State::Established);
        c.credit.update_peer(req.buf_alloc, req.fwd_cnt);
        c.owe.response = true;
        Metrics::inc(&c.metrics.conns_opened);
        c
    }

    fn new(
        stream: UnixStream,
        key: ConnKey,
        cfg: &VsockConfig,
        metrics: Arc<Metrics>,
        state: State,
    ) -> Self {
        Connection {
            stream,
            key,
            state,
            credit: Credit::new(cfg.buf_alloc),
            tx_buf: TxBuf::default(),
            owe: Owed::default(),
            host: HostSide::default(),
            sent_shutdown: 0,
            peer_shutdown: 0,
            credit_requested: false,
            deadline: None,
            shutdown_timeout: cfg.shutdown_timeout,
            metrics,
            registered: None,
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Handles a packet from the guest addressed to this connection. `data` is the payload
    /// of an RW packet (empty otherwise).
    pub(crate) fn on_guest_packet(&mut self, hdr: &Header, data: &[u8], now: Instant) {
        if self.state == State::Dead {
            return;
        }
        if hdr.op() == Some(Op::Rst) {
            if self.sent_shutdown == 0 && self.peer_shutdown == 0 && !self.owe.rst {
                Metrics::inc(&self.metrics.conns_reset);
            }
            self.state = State::Dead;
            self.owe = Owed::default();
            return;
        }
        if self.owe.rst {
            // Already closing with a reset; the guest will hear it.
            return;
        }
        if self.credit.update_peer(hdr.buf_alloc, hdr.fwd_cnt) {
            self.credit_requested = false;
        }
        match (self.state, hdr.op()) {
            (State::Connecting, Some(Op::Response)) if !self.owe.request => {
                self.state = State::Established;
                self.deadline = None;
                Metrics::inc(&self.metrics.conns_opened);
                let ok = format!("OK {}\n", self.key.local_port);
                self.tx_buf.push_preamble(ok.as_bytes());
                self.flush_host();
            }
            (State::Established, Some(Op::Rw)) => self.recv_data(data),
            (State::Established, Some(Op::CreditUpdate)) => {}
            (State::Established, Some(Op::CreditRequest)) => self.owe.credit_update = true,
            (State::Established, Some(Op::Shutdown)) => {
                self.peer_shut(hdr.flags & SHUTDOWN_BOTH, now)
            }
            _ => self.violation(),
        }
        self.check_finished(now);
    }

    /// Fires the connect or shutdown timeout if it is due.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            if self.state != State::Dead && !self.owe.rst {
                self.abort();
            }
        }
    }

    /// Resets the connection from our side (the muxer gave up on it).
    pub(crate) fn abort(&mut self) {
        if self.state == State::Dead {
            return;
        }
        Metrics::inc(&self.metrics.conns_reset);
        let told_guest = !(self.state == State::Connecting && self.owe.request);
        self.close(told_guest);
    }

    /// Ends the connection: the host stream is shut both ways at once; the guest gets an
    /// RST if it knows about the connection.
    fn close(&mut self, send_rst: bool) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.owe = Owed {
            rst: send_rst,
            ..Owed::default()
        };
        self.deadline = None;
        if !send_rst {
            self.state = State::Dead;
        }
    }

    fn violation(&mut self) {
        Metrics::inc(&self.metrics.protocol_violations);
        self.abort();
    }

    fn recv_data(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 || !self.credit.guest_may_send(data.len()) {
            return self.violation();
        }
        // `data` is at most MAX_PKT_DATA bytes.
        self.credit.on_received(data.len() as u32);
        match self.tx_buf.write_or_buffer(&mut self.stream, data) {
            Ok(n) => self.credit.on_forwarded(n as u32),
            Err(_) => return self.abort(),
        }
        if self.credit.update_due() {
            self.owe.credit_update = true;
        }
    }

    fn peer_shut(&mut self, flags: u32, now: Instant) {
        let new = flags & !self.peer_shutdown;
        self.peer_shutdown |= flags;
        if new & SHUTDOWN_RCV != 0 {
            let _ = self.stream.shutdown(Shutdown::Read);
            self.host.readable = false;
        }
        if new & SHUTDOWN_SEND != 0 {
            self.maybe_shut_host_write();
        }
        if self.peer_shutdown == SHUTDOWN_BOTH && self.deadline.is_none() {
            self.deadline = Some(now + self.shutdown_timeout);
        }
    }

    /// Closes in order once neither side can send anything more.
    fn check_finished(&mut self, now: Instant) {
        if self.state != State::Established || self.owe.rst {
            return;
        }
        let guest_done = self.peer_shutdown & SHUTDOWN_SEND != 0;
        let host_done = (self.sent_shutdown | self.owe.shutdown) & SHUTDOWN_SEND != 0
            || self.peer_shutdown & SHUTDOWN_RCV != 0;
        if guest_done && host_done {
            if self.tx_buf.is_empty() {
                self.close(true);
            } else if self.deadline.is_none() {
                // Waiting for the host to read the rest, but not forever.
                self.deadline = Some(now + self.shutdown_timeout);
            }
        }
    }

    /// The next packet this connection has for the guest; an RW packet's payload is read
    /// into `buf` (whose length bounds it). `None` when there is nothing to send now.
    pub(crate) fn next_packet(&mut self, buf: &mut [u8], now: Instant) -> Option<Outgoing> {
        if self.state == State::Dead {
            return None;
        }
        if self.can_read_host() {
            if let Some(n) = self.read_host(buf, now) {
                return Some(self.out(Op::Rw, 0, n));
            }
        }
        let owe = &mut self.owe;
        let (op, flags) = if owe.rst {
            self.state = State::Dead;
            self.owe = Owed::default();
            (Op::Rst, 0)
        } else if owe.request {
            owe.request = false;
            (Op::Request, 0)
        } else if owe.response {
            owe.response = false;
            (Op::Response, 0)
        } else if owe.shutdown != 0 {
            let flags = std::mem::take(&mut owe.shutdown);
            self.sent_shutdown |= flags;
            (Op::Shutdown, flags)
        } else if owe.credit_request {
            owe.credit_request = false;
            (Op::CreditRequest, 0)
        } else if owe.credit_update {
            owe.credit_update = false;
            (Op::CreditUpdate, 0)
        } else {
            return None;
        };
        Some(self.out(op, flags, 0))
    }

    fn out(&mut self, op: Op, flags: u32, len: usize) -> Outgoing {
        // Every header carries our credit, so a separate update is no longer owed.
        let (buf_alloc, fwd_cnt) = self.credit.tell();
        self.owe.credit_update = false;
        Outgoing {
            op,
            flags,
            len,
            buf_alloc,
            fwd_cnt,
        }
    }

    /// The full header of `out`, a packet from this connection to the guest.
    pub(crate) fn header(&self, out: &Outgoing, guest_cid: u64) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len: out.len as u32,
            type_: TYPE_STREAM,
            op: out.op.to_u16(),
            flags: out.flags,
            buf_alloc: out.buf_alloc,
            fwd_cnt: out.fwd_cnt,
        }
    }

    /// Whether [`Connection::next_packet`] may have something.
    pub(crate) fn has_rx_work(&self) -> bool {
        if self.state == State::Dead {
            return false;
        }
        let o = &self.owe;
        o.rst
            || o.request
            || o.response
            || o.shutdown != 0
            || o.credit_request
            || o.credit_update
            || (self.can_read_host() && (self.credit.peer_free() > 0 || !self.credit_requested))
    }
}

#[cfg(test)]
mod tests;

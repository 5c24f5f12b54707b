//! The host-stream side of a connection: readiness, reads for the guest, writes from it.

use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::{Connection, State};
use crate::proto::{MAX_PKT_DATA, SHUTDOWN_RCV, SHUTDOWN_SEND};

impl Connection {
    /// Handles epoll readiness of the host stream.
    pub(crate) fn on_host_event(&mut self, ev: EventSet, now: Instant) {
        if self.state == State::Dead || self.owe.rst {
            return;
        }
        if ev.contains(EventSet::ERROR)
            || (self.state == State::Connecting && ev.contains(EventSet::HANG_UP))
        {
            // A broken stream, or a client that gave up before the guest answered.
            self.abort();
            return;
        }
        if ev.contains(EventSet::IN) {
            self.host.readable = true;
        }
        if ev.contains(EventSet::HANG_UP) {
            self.host.hup = true;
            // Whatever is left to read, then EOF.
            self.host.readable = true;
        }
        if ev.contains(EventSet::OUT) {
            self.flush_host();
        }
        self.check_finished(now);
    }

    pub(super) fn flush_host(&mut self) {
        match self.tx_buf.flush(&mut self.stream) {
            Ok(n) => self.credit.on_forwarded(n as u32),
            Err(_) => return self.abort(),
        }
        if self.credit.update_due() {
            self.owe.credit_update = true;
        }
        self.maybe_shut_host_write();
    }

    pub(super) fn maybe_shut_host_write(&mut self) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0
            && self.tx_buf.is_empty()
            && !self.host.write_shut
        {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host.write_shut = true;
        }
    }

    pub(super) fn can_read_host(&self) -> bool {
        self.state == State::Established
            && !self.owe.rst
            && !self.owe.response
            && self.host.readable
            && !self.host.eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Reads host bytes for the guest into `buf`, within the guest's credit.
    pub(super) fn read_host(&mut self, buf: &mut [u8], now: Instant) -> Option<usize> {
        let free = self.credit.peer_free() as usize;
        if free == 0 {
            if !self.credit_requested {
                self.credit_requested = true;
                self.owe.credit_request = true;
            }
            return None;
        }
        let max = buf.len().min(free).min(MAX_PKT_DATA);
        let buf = buf.get_mut(..max)?;
        if buf.is_empty() {
            return None;
        }
        loop {
            return match self.stream.read(buf) {
                Ok(0) => {
                    self.host.eof = true;
                    self.host.readable = false;
                    self.owe.shutdown |= SHUTDOWN_SEND;
                    if self.host.hup {
                        // Closed both ways: the guest may not send either; wait for its RST.
                        self.owe.shutdown |= SHUTDOWN_RCV;
                        self.deadline = Some(now + self.shutdown_timeout);
                    }
                    self.check_finished(now);
                    None
                }
                Ok(n) => {
                    let n = n.min(max);
                    self.credit.on_sent(n as u32);
                    Some(n)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.host.readable = false;
                    None
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.abort();
                    None
                }
            };
        }
    }

    /// The epoll interest the host stream should have; `None` when it should be off epoll.
    pub(crate) fn interest(&self) -> Option<EventSet> {
        if self.state == State::Dead || self.owe.rst || self.host.hup {
            return None;
        }
        let mut ev = EventSet::empty();
        if self.state == State::Established
            && !self.host.readable
            && !self.host.eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.credit.peer_free() > 0
        {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        Some(ev)
    }

    pub(crate) fn stream_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

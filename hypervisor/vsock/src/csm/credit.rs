//! Credit-based flow control for one connection (virtio spec §5.10.6.3), both directions.
//!
//! Counters are `u32` and wrap, as on the wire. Every value learned from the guest is
//! untrusted: a bogus `fwd_cnt` can only shrink the credit the guest gives itself.

/// Credit state of one connection.
#[derive(Debug)]
pub(crate) struct Credit {
    /// Receive buffer we advertise (guest → host).
    buf_alloc: u32,
    /// Guest payload bytes received.
    rx_cnt: u32,
    /// Guest payload bytes written to the host stream.
    fwd_cnt: u32,
    /// The `fwd_cnt` the guest last heard from us.
    fwd_cnt_told: u32,
    /// The guest's receive buffer (host → guest).
    peer_buf_alloc: u32,
    /// Bytes the guest has consumed, by its last word.
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest.
    tx_cnt: u32,
}

impl Credit {
    pub(crate) fn new(buf_alloc: u32) -> Self {
        Credit {
            buf_alloc,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
        }
    }

    /// Records the credit fields of a guest header; true if they changed.
    pub(crate) fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) -> bool {
        let changed = (buf_alloc, fwd_cnt) != (self.peer_buf_alloc, self.peer_fwd_cnt);
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
        changed
    }

    /// Bytes we may send to the guest now.
    pub(crate) fn peer_free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records `n` payload bytes sent to the guest (`n <= peer_free()`).
    pub(crate) fn on_sent(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
    }

    /// Whether the guest may send `n` more bytes given what we told it.
    pub(crate) fn guest_may_send(&self, n: usize) -> bool {
        let in_flight = u64::from(self.rx_cnt.wrapping_sub(self.fwd_cnt_told));
        in_flight.saturating_add(n as u64) <= u64::from(self.buf_alloc)
    }

    /// Records `n` payload bytes received from the guest.
    pub(crate) fn on_received(&mut self, n: u32) {
        self.rx_cnt = self.rx_cnt.wrapping_add(n);
    }

    /// Records `n` guest bytes written to the host stream.
    pub(crate) fn on_forwarded(&mut self, n: u32) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
    }

    /// The values to put in the next header to the guest; marks them as told.
    pub(crate) fn tell(&mut self) -> (u32, u32) {
        self.fwd_cnt_told = self.fwd_cnt;
        (self.buf_alloc, self.fwd_cnt)
    }

    /// Whether the guest should hear about freed buffer space: half the buffer has been
    /// forwarded since we last told it, so it may be (or soon be) blocked.
    pub(crate) fn update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_told) >= self.buf_alloc / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_credit_wraps_and_saturates() {
        let mut c = Credit::new(4096);
        assert_eq!(c.peer_free(), 0);
        c.update_peer(1000, 0);
        assert_eq!(c.peer_free(), 1000);
        c.on_sent(600);
        assert_eq!(c.peer_free(), 400);
        c.update_peer(1000, 600);
        assert_eq!(c.peer_free(), 1000);
        // A bogus fwd_cnt ahead of what we sent cannot make credit out of nothing.
        c.update_peer(1000, 5000);
        assert_eq!(c.peer_free(), 0);
        // Counters wrap.
        let mut c = Credit::new(4096);
        c.tx_cnt = u32::MAX - 10;
        c.update_peer(100, u32::MAX - 10);
        c.on_sent(50);
        assert_eq!(c.peer_free(), 50);
    }

    #[test]
    fn guest_credit_is_what_we_told() {
        let mut c = Credit::new(4096);
        assert!(c.guest_may_send(4096));
        assert!(!c.guest_may_send(4097));
        c.on_received(4096);
        assert!(!c.guest_may_send(1));
        c.on_forwarded(4096);
        // Forwarded, but the guest has not been told yet.
        assert!(!c.guest_may_send(1));
        assert!(c.update_due());
        assert_eq!(c.tell(), (4096, 4096));
        assert!(!c.update_due());
        assert!(c.guest_may_send(4096));
        assert!(!c.guest_may_send(usize::MAX));
    }
}

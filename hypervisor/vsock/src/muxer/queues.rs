//! The muxer's two RX-side queues: connection-less replies (bounded; a full queue drops)
//! and the round-robin schedule of connections with something for the guest.

use std::collections::{HashSet, VecDeque};

use crate::csm::ConnKey;
use crate::proto::Header;

/// Replies that belong to no connection (RSTs to unknown ports), bounded.
#[derive(Debug)]
pub(crate) struct ControlQueue {
    q: VecDeque<Header>,
    cap: usize,
}

impl ControlQueue {
    pub(crate) fn new(cap: usize) -> Self {
        ControlQueue {
            q: VecDeque::new(),
            cap,
        }
    }

    /// Queues `h`; false (and nothing queued) when full.
    pub(crate) fn push(&mut self, h: Header) -> bool {
        if self.q.len() >= self.cap {
            return false;
        }
        self.q.push_back(h);
        true
    }

    pub(crate) fn pop(&mut self) -> Option<Header> {
        self.q.pop_front()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.q.len() >= self.cap
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }
}

/// Connections that have packets for the guest, each at most once, served in turn.
#[derive(Debug, Default)]
pub(crate) struct RxSchedule {
    q: VecDeque<ConnKey>,
    set: HashSet<ConnKey>,
}

impl RxSchedule {
    pub(crate) fn push(&mut self, key: ConnKey) {
        if self.set.insert(key) {
            self.q.push_back(key);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<ConnKey> {
        let key = self.q.pop_front()?;
        self.set.remove(&key);
        Some(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_queue_is_bounded() {
        let mut q = ControlQueue::new(2);
        assert!(q.push(Header::default()));
        assert!(q.push(Header::default()));
        assert!(q.is_full());
        assert!(!q.push(Header::default()));
        assert_eq!(q.len(), 2);
        q.pop();
        assert!(!q.is_full());
    }

    #[test]
    fn schedule_dedups_and_rotates() {
        let k = |p| ConnKey {
            local_port: p,
            peer_port: p,
        };
        let mut s = RxSchedule::default();
        s.push(k(1));
        s.push(k(2));
        s.push(k(1));
        assert_eq!(s.len(), 2);
        assert_eq!(s.pop(), Some(k(1)));
        s.push(k(1));
        assert_eq!(s.pop(), Some(k(2)));
        assert_eq!(s.pop(), Some(k(1)));
        assert!(s.is_empty());
    }
}

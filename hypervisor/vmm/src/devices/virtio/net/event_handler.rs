//! The net device thread: one epoll over the stop event, the kick event (queue
//! notifications, activation) and the tap (edge-triggered), moving frames both ways.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::QueueT;
use vmm_sys_util::epoll::{Epoll, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::rx::TapReader;
use super::{rx, tx, Active, NetMetrics, Shared, Tap, BUDGET, MAX_TX_CHAIN_LEN};
use crate::devices::epoll_loop::{self, EpollHandler};

const KICK: u64 = 1;
const TAP: u64 = 2;

/// The read buffer: more than the largest frame a tap's MTU (at most 65535) allows,
/// with Ethernet, VLAN and virtio-net headers.
const RX_BUF_LEN: usize = 1 << 17;

/// The device thread's state; [`EventHandler::run`] is its body.
pub(super) struct EventHandler {
    tap: Tap,
    shared: Arc<Shared>,
    kick: Arc<EventFd>,
    metrics: Arc<NetMetrics>,
    /// The tap may have frames to read: set when epoll says so (edge-triggered), cleared
    /// when a read finds none.
    tap_readable: bool,
    /// The last round left work for another.
    more: bool,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
}

impl EventHandler {
    pub(super) fn new(
        tap: Tap,
        shared: Arc<Shared>,
        kick: Arc<EventFd>,
        metrics: Arc<NetMetrics>,
    ) -> EventHandler {
        EventHandler {
            tap,
            shared,
            kick,
            metrics,
            // Frames may have queued before the first edge.
            tap_readable: true,
            more: false,
            tx_buf: vec![0; MAX_TX_CHAIN_LEN],
            rx_buf: vec![0; RX_BUF_LEN],
        }
    }

    /// Runs until `stop` fires; then the tap closes (and vanishes if we created it).
    pub(super) fn run(mut self, stop: EventFd) {
        epoll_loop::run(&mut self, &stop);
    }

    /// One round over both queues; whether work is left for another.
    fn process(&mut self) -> bool {
        let shared = self.shared.clone();
        let mut slot = shared.lock();
        let Some(active) = slot.as_mut() else {
            return false;
        };
        match self.round(active) {
            Ok(more) => more,
            Err(error) => {
                // The guest broke its rings: serve nothing until it resets the device.
                NetMetrics::count_first(&self.metrics.queue_errors, &error, "net queues unusable");
                *slot = None;
                false
            }
        }
    }

    fn round(&mut self, active: &mut Active) -> Result<bool, virtio_queue::Error> {
        let m = &*self.metrics;
        let Active {
            mem,
            rx,
            tx,
            interrupt,
            chains,
        } = active;
        let sent = tx::process(tx, mem, &self.tap, &mut self.tx_buf, m, *chains, BUDGET)?;
        let tap = TapReader {
            tap: &self.tap,
            readable: &mut self.tap_readable,
            buf: &mut self.rx_buf,
        };
        let received = rx::process(rx, mem, tap, m, *chains, BUDGET)?;
        // A failed check errs towards an interrupt.
        let notify = (sent.used && tx.needs_notification(mem).unwrap_or(true))
            | (received.used && rx.needs_notification(mem).unwrap_or(true));
        if notify && interrupt.signal_used_queue().is_err() {
            NetMetrics::inc(&m.interrupt_errors);
        }
        Ok(sent.more || received.more)
    }
}

impl EpollHandler for EventHandler {
    const NAME: &'static str = "net";

    fn watched(&self) -> Vec<(RawFd, EventSet, u64)> {
        vec![
            (self.kick.as_raw_fd(), EventSet::IN, KICK),
            (
                self.tap.as_raw_fd(),
                EventSet::IN | EventSet::EDGE_TRIGGERED,
                TAP,
            ),
        ]
    }

    fn timeout(&self) -> i32 {
        // With work left over from the last round, only look for new events.
        if self.more {
            0
        } else {
            -1
        }
    }

    fn woken(&mut self) {
        NetMetrics::inc(&self.metrics.wakeups);
    }

    fn event(&mut self, _epoll: &Epoll, token: u64) {
        match token {
            // Reading resets the counter; several kicks need one pass.
            KICK => drop(self.kick.read()),
            _ => self.tap_readable = true,
        }
    }

    fn after_events(&mut self) {
        self.more = self.process();
    }

    fn failed(&mut self, what: &str, error: &io::Error) {
        let tap = self.tap.name();
        tracing::error!(tap, %error, "net {what} failed; the device is dead");
    }
}

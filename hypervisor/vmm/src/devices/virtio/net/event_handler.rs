//! The net device thread: one epoll over the stop event, the kick event (queue
//! notifications, activation) and the tap (edge-triggered), moving frames both ways.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use virtio_queue::QueueT;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::rx::TapReader;
use super::{rx, tx, Active, NetMetrics, Shared, Tap, BUDGET, MAX_TX_CHAIN_LEN};

const STOP: u64 = 0;
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
            tx_buf: vec![0; MAX_TX_CHAIN_LEN],
            rx_buf: vec![0; RX_BUF_LEN],
        }
    }

    /// Runs until `stop` fires; then the tap closes (and vanishes if we created it).
    pub(super) fn run(mut self, stop: EventFd) {
        let epoll = match self.epoll(&stop) {
            Ok(epoll) => epoll,
            Err(error) => {
                let tap = self.tap.name();
                tracing::error!(tap, %error, "net event loop setup failed; the device is dead");
                return;
            }
        };
        let mut events = [EpollEvent::default(); 3];
        let mut more = false;
        loop {
            // With work left over from the last round, only look for new events.
            let timeout = if more { 0 } else { -1 };
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    let tap = self.tap.name();
                    tracing::error!(tap, %error, "net epoll failed; the device is dead");
                    return;
                }
            };
            NetMetrics::inc(&self.metrics.wakeups);
            for event in &events[..n] {
                match event.data() {
                    STOP => return,
                    // Reading resets the counter; several kicks need one pass.
                    KICK => drop(self.kick.read()),
                    _ => self.tap_readable = true,
                }
            }
            more = self.process();
        }
    }

    fn epoll(&self, stop: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token, events) in [
            (stop.as_raw_fd(), STOP, EventSet::IN),
            (self.kick.as_raw_fd(), KICK, EventSet::IN),
            (
                self.tap.as_raw_fd(),
                TAP,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ),
        ] {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?;
        }
        Ok(epoll)
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
        } = active;
        let sent = tx::process(tx, mem, &self.tap, &mut self.tx_buf, m, BUDGET)?;
        let tap = TapReader {
            tap: &self.tap,
            readable: &mut self.tap_readable,
            buf: &mut self.rx_buf,
        };
        let received = rx::process(rx, mem, tap, m, BUDGET)?;
        // A failed check errs towards an interrupt.
        let notify = (sent.used && tx.needs_notification(mem).unwrap_or(true))
            | (received.used && rx.needs_notification(mem).unwrap_or(true));
        if notify && interrupt.signal_used_queue().is_err() {
            NetMetrics::inc(&m.interrupt_errors);
        }
        Ok(sent.more || received.more)
    }
}

//! The virtio-blk device thread: one epoll over the kick event (queue notifications,
//! activation) and the stop event. It owns the disk: ending the thread closes the
//! image and releases its lock.

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::worker::Worker;
use super::{BlockMetrics, Shared};

const STOP: u64 = 0;
const KICK: u64 = 1;

/// The device thread's state; [`EventHandler::run`] is its body.
pub(super) struct EventHandler {
    worker: Worker,
    shared: Arc<Shared>,
    kick: Arc<EventFd>,
    metrics: Arc<BlockMetrics>,
}

impl EventHandler {
    pub(super) fn new(
        worker: Worker,
        shared: Arc<Shared>,
        kick: Arc<EventFd>,
        metrics: Arc<BlockMetrics>,
    ) -> EventHandler {
        EventHandler {
            worker,
            shared,
            kick,
            metrics,
        }
    }

    /// Runs until `stop` fires; then the disk goes away.
    pub(super) fn run(mut self, stop: EventFd) {
        let epoll = match self.epoll(&stop) {
            Ok(epoll) => epoll,
            Err(error) => {
                tracing::error!(%error, "virtio-blk event loop setup failed; the device is dead");
                return;
            }
        };
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::error!(%error, "virtio-blk epoll failed; the device is dead");
                    return;
                }
            };
            for event in &events[..n] {
                match event.data() {
                    STOP => return,
                    // Reading resets the counter; several kicks need one pass.
                    _ => drop(self.kick.read()),
                }
            }
            self.process();
        }
    }

    fn epoll(&self, stop: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token) in [(stop.as_raw_fd(), STOP), (self.kick.as_raw_fd(), KICK)] {
            let event = EpollEvent::new(EventSet::IN, token);
            epoll.ctl(ControlOperation::Add, fd, event)?;
        }
        Ok(epoll)
    }

    /// Serves a batch of requests and signals the guest.
    fn process(&mut self) {
        let shared = &self.shared;
        let mut slot = shared.lock();
        let Some(active) = slot.as_mut() else {
            return;
        };
        let yield_now = || shared.resetting.load(Ordering::Acquire);
        match self
            .worker
            .process_queue(&mut active.queue, &active.mem, &yield_now)
        {
            Ok(done) => {
                if done.notify && active.interrupt.signal_used_queue().is_err() {
                    self.metrics
                        .interrupt_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
                if done.more {
                    // Let a reset in, then carry on where the batch stopped.
                    let _ = self.kick.write(1);
                }
            }
            Err(error) => {
                // The guest broke its ring: serve nothing until it resets the device.
                count_first(&self.metrics.queue_errors, &error);
                *slot = None;
            }
        }
    }
}

/// Counts a queue fault; logs only the first, so a guest cannot flood the log.
fn count_first(counter: &AtomicU64, error: &super::worker::QueueFault) {
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(error = %error, cause = %error.0, "virtio-blk queue unusable");
    }
}

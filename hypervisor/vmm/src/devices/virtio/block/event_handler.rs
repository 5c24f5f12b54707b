//! The virtio-blk device thread: one epoll over the kick event (queue notifications,
//! activation) and the stop event. It owns the disk: ending the thread closes the
//! image and releases its lock.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::epoll::{Epoll, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::worker::Worker;
use super::{BlockMetrics, Shared};
use crate::devices::epoll_loop::{self, EpollHandler};

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
        epoll_loop::run(&mut self, &stop);
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
            .process_queue(&mut active.queue, &active.mem, active.chains, &yield_now)
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

impl EpollHandler for EventHandler {
    const NAME: &'static str = "virtio-blk";

    fn watched(&self) -> Vec<(RawFd, EventSet, u64)> {
        vec![(self.kick.as_raw_fd(), EventSet::IN, KICK)]
    }

    fn event(&mut self, _epoll: &Epoll, _token: u64) {
        // Reading resets the counter; several kicks need one pass.
        drop(self.kick.read());
    }

    fn after_events(&mut self) {
        self.process();
    }
}

/// Counts a queue fault; logs only the first, so a guest cannot flood the log.
fn count_first(counter: &AtomicU64, error: &super::worker::QueueFault) {
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(error = %error, cause = %error.0, "virtio-blk queue unusable");
    }
}

//! The vsock device thread: one epoll over the kick event (queue notifications,
//! activation, reset), the device's host-side epoll fd and the stop event.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cocoon_vsock::VsockDevice;
use vmm_sys_util::epoll::{Epoll, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{Shared, VsockGlueMetrics};
use crate::devices::epoll_loop::{self, EpollHandler};

const KICK: u64 = 1;
const HOST: u64 = 2;

/// The device thread's state; [`EventHandler::run`] is its body.
pub(super) struct EventHandler {
    device: VsockDevice,
    shared: Arc<Shared>,
    kick: Arc<EventFd>,
    metrics: Arc<VsockGlueMetrics>,
    /// The device's host side had an event in this round.
    host_ready: bool,
}

impl EventHandler {
    pub(super) fn new(
        device: VsockDevice,
        shared: Arc<Shared>,
        kick: Arc<EventFd>,
        metrics: Arc<VsockGlueMetrics>,
    ) -> EventHandler {
        EventHandler {
            device,
            shared,
            kick,
            metrics,
            host_ready: false,
        }
    }

    /// Runs until `stop` fires; then the device (and its socket) goes away.
    pub(super) fn run(mut self, stop: EventFd) {
        epoll_loop::run(&mut self, &stop);
    }

    /// Applies a pending reset, then moves packets both ways and signals the guest.
    fn process(&mut self) {
        let mut slot = self.shared.lock();
        if std::mem::take(&mut slot.reset_pending) {
            self.device.reset();
        }
        let Some(active) = slot.active.as_mut() else {
            return;
        };
        let result =
            self.device
                .process_queues(&active.mem, Some(&mut active.rx), Some(&mut active.tx));
        match result {
            Ok(notify) if notify.rx || notify.tx => {
                if active.interrupt.signal_used_queue().is_err() {
                    self.metrics
                        .interrupt_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(error) => {
                // The guest broke its rings: serve nothing until it resets the device.
                count_first(&self.metrics.queue_errors, &error, "vsock queues unusable");
                slot.active = None;
            }
        }
    }
}

impl EpollHandler for EventHandler {
    const NAME: &'static str = "vsock";

    fn watched(&self) -> Vec<(RawFd, EventSet, u64)> {
        vec![
            (self.kick.as_raw_fd(), EventSet::IN, KICK),
            (self.device.as_raw_fd(), EventSet::IN, HOST),
        ]
    }

    fn woken(&mut self) {
        self.metrics.wakeups.fetch_add(1, Ordering::Relaxed);
    }

    fn event(&mut self, _epoll: &Epoll, token: u64) {
        match token {
            // Reading resets the counter; several kicks need one pass.
            KICK => drop(self.kick.read()),
            _ => self.host_ready = true,
        }
    }

    fn after_events(&mut self) {
        if std::mem::take(&mut self.host_ready) {
            if let Err(error) = self.device.handle_event() {
                count_first(&self.metrics.host_errors, &error, "vsock host event failed");
            }
        }
        self.process();
    }
}

/// Counts an error; logs only the first of its kind, so a guest cannot flood the log.
fn count_first(counter: &AtomicU64, error: &cocoon_vsock::Error, what: &str) {
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(error = %error, "{what}");
    }
}

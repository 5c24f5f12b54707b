//! The vsock device thread: one epoll over the kick event (queue notifications,
//! activation, reset), the device's host-side epoll fd and the stop event.

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cocoon_vsock::VsockDevice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{Shared, VsockGlueMetrics};

const STOP: u64 = 0;
const KICK: u64 = 1;
const HOST: u64 = 2;

/// The device thread's state; [`EventHandler::run`] is its body.
pub(super) struct EventHandler {
    device: VsockDevice,
    shared: Arc<Shared>,
    kick: Arc<EventFd>,
    metrics: Arc<VsockGlueMetrics>,
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
        }
    }

    /// Runs until `stop` fires; then the device (and its socket) goes away.
    pub(super) fn run(mut self, stop: EventFd) {
        let epoll = match self.epoll(&stop) {
            Ok(epoll) => epoll,
            Err(error) => {
                tracing::error!(%error, "vsock event loop setup failed; the device is dead");
                return;
            }
        };
        let mut events = [EpollEvent::default(); 3];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::error!(%error, "vsock epoll failed; the device is dead");
                    return;
                }
            };
            self.metrics.wakeups.fetch_add(1, Ordering::Relaxed);
            let mut host = false;
            for event in &events[..n] {
                match event.data() {
                    STOP => return,
                    // Reading resets the counter; several kicks need one pass.
                    KICK => drop(self.kick.read()),
                    _ => host = true,
                }
            }
            if host {
                if let Err(error) = self.device.handle_event() {
                    count_first(&self.metrics.host_errors, &error, "vsock host event failed");
                }
            }
            self.process();
        }
    }

    fn epoll(&self, stop: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (stop.as_raw_fd(), STOP),
            (self.kick.as_raw_fd(), KICK),
            (self.device.as_raw_fd(), HOST),
        ] {
            let event = EpollEvent::new(EventSet::IN, token);
            epoll.ctl(ControlOperation::Add, fd, event)?;
        }
        Ok(epoll)
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

/// Counts an error; logs only the first of its kind, so a guest cannot flood the log.
fn count_first(counter: &AtomicU64, error: &cocoon_vsock::Error, what: &str) {
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(error = %error, "{what}");
    }
}

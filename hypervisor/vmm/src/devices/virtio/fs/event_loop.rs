//! The virtio-fs device thread: one epoll over the backend's call eventfds (used
//! buffers, forwarded to the guest as a VRING interrupt), the backend socket (hang-up
//! only) and the stop event. When it ends, it hangs up on the backend.

use std::net::Shutdown;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{FsMetrics, Shared};

const STOP: u64 = 0;
const HANG_UP: u64 = 1;
/// Call eventfd `i` has token `CALL + i`.
const CALL: u64 = 2;

/// The device thread's state; [`EventLoop::run`] is its body.
pub(super) struct EventLoop {
    calls: Vec<EventFd>,
    socket: UnixStream,
    shared: Arc<Shared>,
    metrics: Arc<FsMetrics>,
}

impl EventLoop {
    pub(super) fn new(
        calls: Vec<EventFd>,
        socket: UnixStream,
        shared: Arc<Shared>,
        metrics: Arc<FsMetrics>,
    ) -> EventLoop {
        EventLoop {
            calls,
            socket,
            shared,
            metrics,
        }
    }

    /// Runs until `stop` fires, then hangs up on the backend.
    pub(super) fn run(self, stop: EventFd) {
        self.serve(&stop);
        // Ending the thread releases the host side: the backend sees the connection
        // close (virtiofsd exits).
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    fn serve(&self, stop: &EventFd) {
        let epoll = match self.epoll(stop) {
            Ok(epoll) => epoll,
            Err(error) => {
                tracing::error!(%error, "virtio-fs event loop setup failed; the device is dead");
                self.backend_gone();
                return;
            }
        };
        let mut events = [EpollEvent::default(); 4];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::error!(%error, "virtio-fs epoll failed; the device is dead");
                    self.backend_gone();
                    return;
                }
            };
            for event in &events[..n] {
                match event.data() {
                    STOP => return,
                    HANG_UP => {
                        // Level-triggered: watched no more once seen.
                        let _ = epoll.ctl(
                            ControlOperation::Delete,
                            self.socket.as_raw_fd(),
                            EpollEvent::default(),
                        );
                        self.backend_gone();
                    }
                    token => self.forward(token - CALL),
                }
            }
        }
    }

    fn epoll(&self, stop: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let add = |fd, events, token| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        };
        add(stop.as_raw_fd(), EventSet::IN, STOP)?;
        // Not IN: replies to the vCPU threads' requests arrive on this socket. A
        // closed peer shows as RDHUP (HUP and ERR come unasked).
        add(self.socket.as_raw_fd(), EventSet::READ_HANG_UP, HANG_UP)?;
        for (i, call) in self.calls.iter().enumerate() {
            add(call.as_raw_fd(), EventSet::IN, CALL + i as u64)?;
        }
        Ok(epoll)
    }

    /// The backend used buffers of queue `index`: tell the driver, if it has the queues.
    fn forward(&self, index: u64) {
        let Some(call) = usize::try_from(index).ok().and_then(|i| self.calls.get(i)) else {
            return;
        };
        // Reading resets the counter: several signals need one interrupt.
        if call.read().is_err() {
            return;
        }
        let slot = self.shared.interrupt();
        let Some(interrupt) = slot.as_ref() else {
            // A signal from before a reset: the driver has no queues to look at.
            return;
        };
        // Counted first: whoever sees the interrupt sees it counted.
        self.metrics.interrupts.fetch_add(1, Ordering::Relaxed);
        if interrupt.signal_used_queue().is_err() {
            self.metrics
                .interrupt_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The backend is gone (it hung up, or this thread cannot watch it): counted once,
    /// and an active device asks the driver for a reset.
    fn backend_gone(&self) {
        if !self.shared.mark_gone() {
            // Already known (a failed request marked it), and counted there.
            return;
        }
        tracing::error!("the virtio-fs backend hung up; the device needs a reset");
        if let Some(interrupt) = self.shared.interrupt().as_ref() {
            if interrupt.signal_needs_reset().is_err() {
                self.metrics
                    .interrupt_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        // Counted last: whoever sees the count sees the device needing a reset.
        self.metrics.backend_errors.fetch_add(1, Ordering::Relaxed);
    }
}

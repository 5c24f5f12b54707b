//! The virtio-fs device thread: one epoll over the backend's call eventfds (used
//! buffers, forwarded to the guest as a VRING interrupt), the backend socket (hang-up
//! only) and the stop event. When it ends, it hangs up on the backend.

use std::io;
use std::net::Shutdown;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{FsMetrics, Shared};
use crate::devices::epoll_loop::{self, EpollHandler};

const HANG_UP: u64 = 1;
/// Call eventfd `i` has token `CALL + i`.
const CALL: u64 = 2;

/// The device thread's state; [`EventLoop::run`] is its body.
pub(super) struct EventLoop {
    calls: Vec<EventFd>,
    socket: UnixStream,
    /// Where the backend listens, for the log.
    path: PathBuf,
    shared: Arc<Shared>,
    metrics: Arc<FsMetrics>,
}

impl EventLoop {
    pub(super) fn new(
        calls: Vec<EventFd>,
        socket: UnixStream,
        path: PathBuf,
        shared: Arc<Shared>,
        metrics: Arc<FsMetrics>,
    ) -> EventLoop {
        EventLoop {
            calls,
            socket,
            path,
            shared,
            metrics,
        }
    }

    /// Runs until `stop` fires, then hangs up on the backend.
    pub(super) fn run(mut self, stop: EventFd) {
        epoll_loop::run(&mut self, &stop);
        // Ending the thread releases the host side: the backend sees the connection
        // close (virtiofsd exits).
        let _ = self.socket.shutdown(Shutdown::Both);
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
        tracing::error!(
            socket = %self.path.display(),
            "the virtio-fs backend connection closed; the device needs a reset"
        );
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

impl EpollHandler for EventLoop {
    const NAME: &'static str = "virtio-fs";

    fn watched(&self) -> Vec<(RawFd, EventSet, u64)> {
        // Not IN: replies to the vCPU threads' requests arrive on this socket. A
        // closed peer shows as RDHUP (HUP and ERR come unasked).
        let mut watched = vec![(self.socket.as_raw_fd(), EventSet::READ_HANG_UP, HANG_UP)];
        for (i, call) in self.calls.iter().enumerate() {
            watched.push((call.as_raw_fd(), EventSet::IN, CALL + i as u64));
        }
        watched
    }

    fn event(&mut self, epoll: &Epoll, token: u64) {
        match token {
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

    fn failed(&mut self, what: &str, error: &io::Error) {
        epoll_loop::log_failure(Self::NAME, what, error);
        self.backend_gone();
    }
}

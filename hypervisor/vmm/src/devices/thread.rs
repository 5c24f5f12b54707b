//! A device's own event thread, and how the VMM ends it.
//!
//! Devices with host-side I/O run an epoll loop ([`super::epoll_loop`]) on a thread
//! of their own, woken by a stop event and the device's own fds (KVM ioeventfds for
//! queue notifications, host sockets, a tap, a backend's signals). The loop owns the
//! device's host resources, so ending the thread releases them (for vsock: its unix
//! socket is removed). The thread's first action is installing the device seccomp
//! filter ([`seccomp::apply`]), when filters are on.

use std::io;

use vmm_sys_util::eventfd::EventFd;

use crate::seccomp::{self, ThreadKind};
use crate::stoppable::StoppableThread;

/// A running device thread. Dropping it stops the thread and waits for it.
pub struct DeviceThread(StoppableThread);

impl DeviceThread {
    /// Spawns `run` on a thread called `name`, under the [`ThreadKind::Device`] seccomp
    /// filter; `run` gets the stop event, which it must watch and return on.
    pub fn spawn<F>(name: &str, run: F) -> io::Result<DeviceThread>
    where
        F: FnOnce(EventFd) + Send + 'static,
    {
        DeviceThread::spawn_as(name, ThreadKind::Device, run)
    }

    /// [`DeviceThread::spawn`] under the seccomp filter of `kind` (the vsock device's
    /// thread, which has host sockets, gets [`ThreadKind::Vsock`]).
    pub fn spawn_as<F>(name: &str, kind: ThreadKind, run: F) -> io::Result<DeviceThread>
    where
        F: FnOnce(EventFd) + Send + 'static,
    {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let theirs = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                seccomp::apply(kind);
                run(theirs)
            })?;
        let name = name.to_owned();
        let signal = move || {
            if let Err(e) = stop.write(1) {
                tracing::warn!(thread = %name, error = %e, "signalling a device thread to stop");
            }
        };
        Ok(DeviceThread(StoppableThread::new(
            thread,
            "device thread panicked",
            signal,
        )))
    }

    /// Tells the thread to end and waits for it.
    pub fn stop(self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_wakes_and_joins_the_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = DeviceThread::spawn("test", move |stop| loop {
            match stop.read() {
                Ok(v) => return tx.send(v).unwrap(),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        })
        .unwrap();
        t.stop();
        assert_eq!(rx.recv().unwrap(), 1);
    }
}

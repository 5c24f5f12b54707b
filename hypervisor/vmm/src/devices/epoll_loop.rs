//! The loop a device thread ([`super::thread::DeviceThread`]) runs: one epoll over the
//! stop event and the device's own fds. The stop event ends it; an interrupted wait is
//! retried; a failure to set the epoll up or to wait on it is logged and ends it too
//! (the device is dead). What the other events mean is the device's own business:
//! its [`EpollHandler`].

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// The stop event's token; a handler's own tokens are other values.
pub const STOP: u64 = 0;

/// A device thread's part in [`run`].
pub trait EpollHandler {
    /// The device, as the loop's log messages name it ("virtio-blk").
    const NAME: &'static str;

    /// The fds to watch besides the stop event: each with its events and its token
    /// (not [`STOP`]).
    fn watched(&self) -> Vec<(RawFd, EventSet, u64)>;

    /// How long the next wait may block, in milliseconds; -1 (the default) waits for
    /// an event.
    fn timeout(&self) -> i32 {
        -1
    }

    /// A wait returned, before its events are handled.
    fn woken(&mut self) {}

    /// One event, in the order epoll reported them; `epoll` is the loop's own (to stop
    /// watching an fd, say).
    fn event(&mut self, epoll: &Epoll, token: u64);

    /// After a wait's events, none of them the stop event.
    fn after_events(&mut self) {}

    /// The loop ends on `error` ("event loop setup" or "epoll" failed, says `what`).
    /// By default logged ([`log_failure`]).
    fn failed(&mut self, what: &str, error: &io::Error) {
        log_failure(Self::NAME, what, error);
    }
}

/// Logs the failure that ends a device's loop.
pub fn log_failure(name: &str, what: &str, error: &io::Error) {
    tracing::error!(%error, "{name} {what} failed; the device is dead");
}

/// Runs `handler`'s loop until `stop` fires or epoll fails.
pub fn run<H: EpollHandler>(handler: &mut H, stop: &EventFd) {
    let watched = handler.watched();
    let epoll = match epoll(stop, &watched) {
        Ok(epoll) => epoll,
        Err(error) => return handler.failed("event loop setup", &error),
    };
    let mut events = vec![EpollEvent::default(); watched.len() + 1];
    loop {
        let n = match epoll.wait(handler.timeout(), &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return handler.failed("epoll", &error),
        };
        handler.woken();
        for event in &events[..n] {
            match event.data() {
                STOP => return,
                token => handler.event(&epoll, token),
            }
        }
        handler.after_events();
    }
}

fn epoll(stop: &EventFd, watched: &[(RawFd, EventSet, u64)]) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    let stop = (stop.as_raw_fd(), EventSet::IN, STOP);
    for &(fd, events, token) in std::iter::once(&stop).chain(watched) {
        epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?;
    }
    Ok(epoll)
}

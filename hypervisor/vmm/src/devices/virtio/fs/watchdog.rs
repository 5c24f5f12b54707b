//! A deadline for each exchange with the vhost-user backend, enforced from outside the
//! blocked call.
//!
//! vhost's frontend retries a send or receive that fails with EAGAIN or EINTR, so a
//! timeout on the socket (SO_RCVTIMEO) never ends the wait for a backend that accepted
//! the connection and then says nothing: the call would block for as long as the
//! backend keeps the socket open — the thread building the VM, or a vCPU thread
//! holding the device's lock while the driver activates or resets it.
//!
//! So each device has a watchdog thread. An exchange ([`Watchdog::guard`]) arms it with
//! a deadline and disarms it when done; if the deadline passes first, the watchdog
//! shuts the socket down both ways (through its own handle on it), so that the blocked
//! call returns at once — a receive reads end-of-file, a send fails with EPIPE — and
//! the exchange reports [`Expired`]. The connection is then gone for good: the device
//! fails, as it does when the backend hangs up.

use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::seccomp::{self, ThreadKind};
use crate::stoppable::StoppableThread;

/// The watchdog hung up on the backend while the exchange ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expired;

/// What the exchanges and the watchdog thread share.
#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    /// Wakes the thread: an exchange armed or disarmed it, or it must end.
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    /// When the running exchange must be done by.
    armed: Option<Instant>,
    /// The watchdog hung up during the running exchange.
    fired: bool,
    /// The thread must end.
    stop: bool,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running watchdog over one backend socket. Dropping it ends its thread.
pub(super) struct Watchdog {
    state: Arc<State>,
    deadline: Duration,
    _thread: StoppableThread,
}

impl Watchdog {
    /// Starts the watchdog thread (under the device seccomp filter), which hangs up
    /// `socket` (a handle on the backend connection) when an exchange takes longer than
    /// `deadline`.
    pub(super) fn spawn(socket: UnixStream, deadline: Duration) -> io::Result<Watchdog> {
        let state = Arc::<State>::default();
        let theirs = state.clone();
        let thread = std::thread::Builder::new()
            .name("fs-watchdog".to_owned())
            .spawn(move || {
                seccomp::apply(ThreadKind::Device);
                watch(&theirs, &socket);
            })?;
        let signal = {
            let state = state.clone();
            move || {
                state.lock().stop = true;
                state.changed.notify_all();
            }
        };
        Ok(Watchdog {
            state,
            deadline,
            _thread: StoppableThread::new(thread, "virtio-fs watchdog thread panicked", signal),
        })
    }

    /// How long one exchange may take.
    pub(super) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Runs `exchange` (one request and its reply) under the deadline. `Expired` when
    /// the watchdog hung up on the backend meanwhile, whatever `exchange` returned:
    /// the connection is gone either way.
    pub(super) fn guard<T>(&self, exchange: impl FnOnce() -> T) -> Result<T, Expired> {
        {
            let mut inner = self.state.lock();
            inner.armed = Some(Instant::now() + self.deadline);
            inner.fired = false;
        }
        self.state.changed.notify_all();
        let result = exchange();
        let fired = {
            let mut inner = self.state.lock();
            inner.armed = None;
            inner.fired
        };
        // Not woken: an armed-then-disarmed watchdog finds nothing to do whenever it
        // looks next.
        if fired {
            Err(Expired)
        } else {
            Ok(result)
        }
    }
}

/// The watchdog thread's body: sleeps while nothing is armed, or until the armed
/// deadline; past it, hangs up on the backend. Ends when told to.
fn watch(state: &State, socket: &UnixStream) {
    let mut inner = state.lock();
    loop {
        if inner.stop {
            return;
        }
        let Some(deadline) = inner.armed else {
            inner = state
                .changed
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let now = Instant::now();
        if now < deadline {
            inner = match state.changed.wait_timeout(inner, deadline - now) {
                Ok((inner, _)) => inner,
                Err(poisoned) => poisoned.into_inner().0,
            };
            continue;
        }
        // Under the lock: the exchange cannot finish unnoticed in between, so it
        // reports the hang-up whenever it happened before it disarmed.
        inner.armed = None;
        inner.fired = true;
        // Fails only if the socket is not connected any more: nothing blocks on it then.
        let _ = socket.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::devices::virtio::test_utils::returns_within;

    #[test]
    fn a_blocked_receive_is_ended_at_the_deadline() {
        let (mut ours, peer) = UnixStream::pair().unwrap();
        let dog = Watchdog::spawn(ours.try_clone().unwrap(), Duration::from_millis(50)).unwrap();
        // The peer never writes: only the watchdog ends this read (end-of-file).
        let (got, mut ours) = returns_within("the read", Duration::from_secs(20), move || {
            let got = dog.guard(|| ours.read(&mut [0u8; 8]).map_err(|e| e.kind()));
            (got, ours)
        });
        assert_eq!(got, Err(Expired));
        assert_eq!(
            ours.read(&mut [0u8; 8]).unwrap(),
            0,
            "the socket is shut down"
        );
        drop(peer);
    }

    #[test]
    fn exchanges_within_the_deadline_pass() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let dog = Watchdog::spawn(ours.try_clone().unwrap(), Duration::from_secs(3600)).unwrap();
        for i in 0..100 {
            assert_eq!(dog.guard(|| i), Ok(i));
        }
        assert_eq!(dog.deadline(), Duration::from_secs(3600));
        drop(dog);
        // Still connected: nothing was shut down.
        let mut peer = peer;
        peer.set_nonblocking(true).unwrap();
        let err = peer.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}

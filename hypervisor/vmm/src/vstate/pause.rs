//! The gate the vCPU threads park at while the VM is paused.
//!
//! A pause is a request every vCPU thread sees between two `KVM_RUN` calls: the
//! pausing thread sets it and kicks each vCPU out of `KVM_RUN` with the loss-free kick
//! of [`super::kick`] (a kick landing just before `KVM_RUN` makes that call return at
//! once), and each vCPU thread then parks on a condition variable, counted, until a
//! resume or the VM's end ([`RunGate::release`]) lets it go. The pausing thread waits
//! for the count ([`RunGate::wait_parked`]). Only the vCPUs stop: device threads keep
//! serving their host side (a paused guest just does not take what they queue).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Where the vCPU threads of one VM park while it is paused.
#[derive(Debug, Default)]
pub struct RunGate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Mirrors `state.paused`, for the vCPU's check before each `KVM_RUN`.
    pause_requested: AtomicBool,
}

#[derive(Debug, Default)]
struct GateState {
    paused: bool,
    /// The VM is ending: nothing parks any more.
    released: bool,
    /// vCPU threads parked now.
    parked: usize,
}

impl RunGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a vCPU thread should call [`RunGate::park`] before entering the guest.
    pub fn should_park(&self) -> bool {
        self.pause_requested.load(Ordering::SeqCst)
    }

    /// Parks the calling vCPU thread while the VM is paused; returns at once if it is
    /// not (any more), and once it is resumed or released.
    pub fn park(&self) {
        let mut s = self.lock();
        if !s.paused || s.released {
            return;
        }
        s.parked += 1;
        self.changed.notify_all();
        while s.paused && !s.released {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.parked -= 1;
        self.changed.notify_all();
    }

    /// Asks the vCPUs to park. False if the VM is already paused or released. The
    /// caller then kicks every vCPU out of `KVM_RUN`.
    pub fn request_pause(&self) -> bool {
        let mut s = self.lock();
        if s.paused || s.released {
            return false;
        }
        s.paused = true;
        self.pause_requested.store(true, Ordering::SeqCst);
        true
    }

    /// Waits up to `timeout` until `count` vCPU threads are parked.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if s.parked >= count {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Lets the parked vCPUs run again. False if the VM was not paused.
    pub fn resume(&self) -> bool {
        let mut s = self.lock();
        if !s.paused {
            return false;
        }
        s.paused = false;
        self.pause_requested.store(false, Ordering::SeqCst);
        self.changed.notify_all();
        true
    }

    /// The VM is ending: wakes every parked vCPU and refuses later pauses.
    pub fn release(&self) {
        let mut s = self.lock();
        s.released = true;
        s.paused = false;
        self.pause_requested.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Whether the VM is paused (every vCPU parked or on its way there).
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// How many vCPU threads are parked now.
    pub fn parked(&self) -> usize {
        self.lock().parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LONG: Duration = Duration::from_secs(30);

    /// Threads that count "guest work" while not parked, like vCPU run loops.
    fn workers(
        gate: &Arc<RunGate>,
        n: usize,
        stop: &Arc<AtomicBool>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (gate, stop) = (gate.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if gate.should_park() {
                            gate.park();
                            continue;
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect()
    }

    #[test]
    fn pause_parks_every_thread_and_resume_lets_them_go() {
        let gate = Arc::new(RunGate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = workers(&gate, 3, &stop);
        assert!(gate.request_pause());
        assert!(!gate.request_pause(), "a second pause is refused");
        assert!(gate.wait_parked(3, LONG));
        assert_eq!(gate.parked(), 3);
        assert!(gate.is_paused());
        assert!(gate.resume());
        assert!(!gate.resume(), "resume when running is refused");
        // Parked threads leave the gate: the count drops back to zero.
        let deadline = Instant::now() + LONG;
        while gate.parked() != 0 {
            assert!(Instant::now() < deadline, "threads stayed parked");
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn release_wakes_parked_threads_and_refuses_later_pauses() {
        let gate = Arc::new(RunGate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = workers(&gate, 2, &stop);
        assert!(gate.request_pause());
        assert!(gate.wait_parked(2, LONG));
        stop.store(true, Ordering::SeqCst);
        gate.release();
        for t in threads {
            t.join().unwrap();
        }
        assert!(!gate.is_paused());
        assert!(!gate.request_pause());
        // A thread that would park after the release does not.
        gate.park();
    }

    #[test]
    fn wait_parked_times_out_when_a_thread_never_parks() {
        let gate = RunGate::default();
        assert!(gate.request_pause());
        assert!(!gate.wait_parked(1, Duration::from_millis(20)));
        assert!(gate.wait_parked(0, Duration::ZERO));
    }

    #[test]
    fn repeated_pause_and_resume_park_each_time() {
        let gate = Arc::new(RunGate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = workers(&gate, 2, &stop);
        for _ in 0..50 {
            assert!(gate.request_pause());
            assert!(gate.wait_parked(2, LONG));
            assert!(gate.resume());
        }
        stop.store(true, Ordering::SeqCst);
        gate.release();
        for t in threads {
            t.join().unwrap();
        }
    }
}

//! The VM of this process through its life, shared by the thread that owns it (the
//! binary's main thread: it builds, waits for and tears down the VM), the API thread
//! and the signal thread.
//!
//! The API thread never builds the VM itself: `PUT /vm/start` hands the configuration
//! to the owner ([`VmSlot::next_request`]) and waits for the outcome, so the thread
//! that builds the VM (and needs the syscalls that takes) is the same with or without
//! the API.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use serde_json::{json, Value};

use crate::config::VmConfig;
use crate::vmm::Vmm;
use crate::Error;

/// Where the VM is in its life.
enum Phase {
    /// No VM yet; waiting for a configuration and a start.
    Configuring,
    /// A start was asked for; the owner is building the VM.
    Starting,
    Running(Arc<Vmm>),
    /// Stopped before any VM ran.
    Ended,
}

struct State {
    phase: Phase,
    config: Option<VmConfig>,
    /// A stop was asked for (by the API or a signal).
    stop: bool,
    /// The outcome of the last start, for the API thread that asked for it.
    start_outcome: Option<Result<(), StartFailure>>,
}

/// A start that failed: the status to answer with and the error chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailure {
    /// 400 when the configuration named something unusable, 500 otherwise.
    pub status: u16,
    pub message: String,
}

/// Why the slot refused a request: the VM's state forbids it (409).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("the VM has already been started")]
    AlreadyStarted,
    #[error("a start is in progress")]
    Starting,
    #[error("the VM has ended")]
    Ended,
    #[error("no configuration: PUT /vm/config first")]
    NotConfigured,
    #[error("the VM has not been started")]
    NotStarted,
}

/// What the owner is asked to do next.
#[derive(Debug)]
pub enum OwnerRequest {
    /// Build and start this VM, then report with [`VmSlot::finish_start`].
    Start(Box<VmConfig>),
    /// Exit without a VM.
    Stop,
}

/// The VM of this process, from configuration to its end.
pub struct VmSlot {
    state: Mutex<State>,
    changed: Condvar,
}

impl Default for VmSlot {
    fn default() -> Self {
        VmSlot::new()
    }
}

impl VmSlot {
    pub fn new() -> VmSlot {
        VmSlot {
            state: Mutex::new(State {
                phase: Phase::Configuring,
                config: None,
                stop: false,
                start_outcome: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse(s: &State) -> SlotError {
        match s.phase {
            Phase::Configuring if s.stop => SlotError::Ended,
            Phase::Configuring => SlotError::NotStarted,
            Phase::Starting => SlotError::Starting,
            Phase::Running(_) => SlotError::AlreadyStarted,
            Phase::Ended => SlotError::Ended,
        }
    }

    /// Sets the configuration (already validated) of the VM to start.
    pub fn configure(&self, config: VmConfig) -> Result<(), SlotError> {
        let mut s = self.lock();
        match s.phase {
            Phase::Configuring if !s.stop => {
                s.config = Some(config);
                Ok(())
            }
            _ => Err(Self::refuse(&s)),
        }
    }

    /// The configuration set, or the one the VM runs with.
    pub fn config(&self) -> Option<VmConfig> {
        self.lock().config.clone()
    }

    /// The running VM, if there is one.
    pub fn vmm(&self) -> Option<Arc<Vmm>> {
        match &self.lock().phase {
            Phase::Running(vmm) => Some(vmm.clone()),
            _ => None,
        }
    }

    /// (API) Has the owner build and start the configured VM and waits for the
    /// outcome: `Ok(Ok(()))` once it runs, `Ok(Err(failure))` if it could not be built
    /// (the configuration stays, for another try).
    pub fn start(&self) -> Result<Result<(), StartFailure>, SlotError> {
        let mut s = self.lock();
        match s.phase {
            Phase::Configuring if s.stop => return Err(SlotError::Ended),
            Phase::Configuring if s.config.is_none() => return Err(SlotError::NotConfigured),
            Phase::Configuring => {}
            _ => return Err(Self::refuse(&s)),
        }
        s.phase = Phase::Starting;
        s.start_outcome = None;
        self.changed.notify_all();
        loop {
            if let Some(outcome) = s.start_outcome.take() {
                return Ok(outcome);
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// (Owner) Waits for a start or a stop request.
    pub fn next_request(&self) -> OwnerRequest {
        let mut s = self.lock();
        loop {
            if s.stop {
                if matches!(s.phase, Phase::Starting) {
                    // An API thread may be waiting for this start's outcome.
                    s.phase = Phase::Ended;
                    s.start_outcome = Some(Err(StartFailure {
                        status: 409,
                        message: "the VM was stopped before it started".into(),
                    }));
                    self.changed.notify_all();
                }
                return OwnerRequest::Stop;
            }
            if let (Phase::Starting, Some(config)) = (&s.phase, &s.config) {
                return OwnerRequest::Start(Box::new(config.clone()));
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// (Owner) Starting `config` without an API request (the command line's VM).
    pub fn begin_start(&self, config: VmConfig) {
        let mut s = self.lock();
        s.config = Some(config);
        s.phase = Phase::Starting;
    }

    /// (Owner) Reports how the start went. A VM that started is published (and, if a
    /// stop was asked for meanwhile, stopped at once: its `wait` returns); one that
    /// did not is reported to the API thread waiting for it and returned to the
    /// caller.
    pub fn finish_start(&self, result: Result<Vmm, Error>) -> Result<Arc<Vmm>, Error> {
        let mut s = self.lock();
        let result = match result {
            Ok(vmm) => {
                let vmm = Arc::new(vmm);
                if s.stop {
                    vmm.stopper().stop();
                }
                s.phase = Phase::Running(vmm.clone());
                s.start_outcome = Some(Ok(()));
                Ok(vmm)
            }
            Err(e) => {
                s.phase = Phase::Configuring;
                s.start_outcome = Some(Err(StartFailure {
                    status: start_error_status(&e),
                    message: error_chain(&e),
                }));
                Err(e)
            }
        };
        self.changed.notify_all();
        result
    }

    /// Ends the VM, or, before one runs, has the owner exit without one.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.stop = true;
        match &s.phase {
            Phase::Running(vmm) => vmm.stopper().stop(),
            Phase::Configuring => s.phase = Phase::Ended,
            Phase::Starting | Phase::Ended => {}
        }
        self.changed.notify_all();
    }

    /// `GET /vm`: the state (`not_started`, `running`, `paused`, `ended`), how the VM
    /// ended, its uptime, vCPUs and memory.
    pub fn status(&self) -> Value {
        let s = self.lock();
        let (vcpus, memory_mib) = match &s.config {
            Some(c) => (Some(c.vcpus), Some(c.memory_mib)),
            None => (None, None),
        };
        let (state, exit, uptime_ms) = match &s.phase {
            Phase::Configuring | Phase::Starting => ("not_started", None, None),
            Phase::Ended => ("ended", None, None),
            Phase::Running(vmm) => {
                let exit = vmm.exit_status();
                let state = match (&exit, vmm.is_paused()) {
                    (Some(_), _) => "ended",
                    (None, true) => "paused",
                    (None, false) => "running",
                };
                let uptime = vmm.uptime().as_millis() as u64;
                (state, exit.map(|e| e.to_string()), Some(uptime))
            }
        };
        json!({
            "state": state,
            "exit": exit,
            "uptime_ms": uptime_ms,
            "vcpus": vcpus,
            "memory_mib": memory_mib,
        })
    }
}

/// 400 for a start that failed on what the configuration names (its fields, the
/// kernel or initrd, the serial log, the vsock socket path), 500 for the host's own
/// failures (KVM, memory, threads).
fn start_error_status(e: &Error) -> u16 {
    match e {
        Error::Config(_) | Error::Boot(_) | Error::SerialLog { .. } | Error::Vsock(_) => 400,
        _ => 500,
    }
}

/// `error: cause: cause…`
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::BootSource;
    use crate::config::ConfigError;

    fn config() -> VmConfig {
        VmConfig::new(BootSource::Raw {
            code: vec![0xf4],
            load_addr: 0x10_0000,
        })
    }

    #[test]
    fn start_needs_a_config_and_reports_the_owners_failure() {
        let slot = Arc::new(VmSlot::new());
        assert_eq!(slot.start(), Err(SlotError::NotConfigured));
        slot.configure(config()).unwrap();
        let owner = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                let OwnerRequest::Start(c) = slot.next_request() else {
                    panic!("expected a start");
                };
                assert_eq!(*c, config());
                let r = slot.finish_start(Err(Error::Config(ConfigError::Vcpus(0))));
                assert!(matches!(r, Err(Error::Config(_))));
            })
        };
        let failure = slot.start().unwrap().unwrap_err();
        owner.join().unwrap();
        assert_eq!(failure.status, 400);
        assert_eq!(
            failure.message,
            "invalid configuration: vcpus: 0 is not in 1..=32"
        );
        // Back to configuring: the configuration stays and can be replaced.
        assert_eq!(slot.status()["state"], "not_started");
        assert_eq!(slot.config(), Some(config()));
        slot.configure(config()).unwrap();
    }

    #[test]
    fn a_stop_before_start_ends_the_slot() {
        let slot = Arc::new(VmSlot::new());
        slot.configure(config()).unwrap();
        let owner = {
            let slot = slot.clone();
            std::thread::spawn(move || matches!(slot.next_request(), OwnerRequest::Stop))
        };
        slot.stop();
        assert!(owner.join().unwrap());
        assert_eq!(slot.status()["state"], "ended");
        assert_eq!(slot.start(), Err(SlotError::Ended));
        assert_eq!(slot.configure(config()), Err(SlotError::Ended));
    }

    #[test]
    fn status_before_start_has_the_configured_size() {
        let slot = VmSlot::new();
        let s = slot.status();
        assert_eq!(s["state"], "not_started");
        assert!(s["vcpus"].is_null() && s["uptime_ms"].is_null() && s["exit"].is_null());
        slot.configure(config()).unwrap();
        let s = slot.status();
        assert_eq!(
            (s["vcpus"].as_u64(), s["memory_mib"].as_u64()),
            (Some(1), Some(128))
        );
    }
}

//! A vCPU: its boot configuration and its thread, which runs `KVM_RUN` and
//! dispatches port and MMIO exits to the buses, and parks at the VM's [`RunGate`]
//! while the VM is paused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::Killable;

use super::kick::{kick_signal, ImmediateExitGuard};
use super::pause::RunGate;
use super::vm::{Vm, VmError};
use crate::arch::x86_64::cpuid;
use crate::arch::x86_64::msr::{setup_msrs, MsrError};
use crate::arch::x86_64::regs::{self, EntryState, RegsError};
use crate::devices::Bus;
use crate::exit::{CrashCause, ExitLatch, ResetCause, VmExit};

/// Errors while creating, configuring or starting a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("creating the vCPU")]
    Create(#[source] VmError),
    #[error("KVM_SET_CPUID2")]
    SetCpuid(#[source] kvm_ioctls::Error),
    #[error("setting MSRs")]
    Msrs(#[source] MsrError),
    #[error("setting registers")]
    Regs(#[source] RegsError),
    #[error("spawning the vCPU thread")]
    Spawn(#[source] std::io::Error),
}

/// Counters for one vCPU's exits.
#[derive(Debug, Default)]
pub struct VcpuMetrics {
    pub exits: AtomicU64,
    pub pio: AtomicU64,
    pub mmio: AtomicU64,
    /// Port or MMIO accesses no device took.
    pub unhandled: AtomicU64,
}

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuShared {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exit: Arc<ExitLatch>,
    /// When the first vCPU exit happened (the guest's first I/O).
    pub first_exit: Arc<OnceLock<Instant>>,
    /// Where the thread parks while the VM is paused.
    pub gate: Arc<RunGate>,
}

/// A configured vCPU, not yet running.
pub struct Vcpu {
    // Dropped before `memory`: the vCPU may touch guest memory until its fd closes.
    fd: VcpuFd,
    index: u8,
    /// Keeps guest memory mapped while this vCPU can run, even if the VM is gone.
    _memory: GuestMemoryMmap,
    metrics: Arc<VcpuMetrics>,
}

impl Vcpu {
    /// Creates vCPU `index` of `count` with CPUID (from `supported`, KVM's offer),
    /// MSRs, FPU and LAPIC; its registers come from [`Vcpu::set_entry`].
    pub fn new(vm: &Vm, supported: &CpuId, index: u8, count: u8) -> Result<Vcpu, VcpuError> {
        let fd = vm.create_vcpu(index).map_err(VcpuError::Create)?;
        let mut cpuid = supported.clone();
        cpuid::filter(&mut cpuid, index, count);
        fd.set_cpuid2(&cpuid).map_err(VcpuError::SetCpuid)?;
        setup_msrs(&fd).map_err(VcpuError::Msrs)?;
        regs::setup_fpu(&fd).map_err(VcpuError::Regs)?;
        regs::setup_lapic(&fd).map_err(VcpuError::Regs)?;
        Ok(Vcpu {
            fd,
            index,
            _memory: vm.memory().clone(),
            metrics: Arc::default(),
        })
    }

    /// Sets the segment and general registers the guest starts with.
    pub fn set_entry(&self, entry: &EntryState) -> Result<(), VcpuError> {
        regs::setup_sregs(&self.fd, entry.mode).map_err(VcpuError::Regs)?;
        regs::setup_regs(&self.fd, entry).map_err(VcpuError::Regs)
    }

    pub fn metrics(&self) -> Arc<VcpuMetrics> {
        self.metrics.clone()
    }

    /// Starts the vCPU on its own thread.
    pub fn spawn(self, shared: VcpuShared) -> Result<VcpuHandle, VcpuError> {
        let index = self.index;
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu);
                self.run(shared)
            })
            .map_err(VcpuError::Spawn)?;
        Ok(VcpuHandle { index, thread })
    }

    fn run(mut self, shared: VcpuShared) {
        let flag: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        // SAFETY: `flag` points into this vCPU's `kvm_run` mapping, owned by `self.fd`,
        // which outlives the guard (the guard is dropped at the end of this function,
        // on this thread, before `self`).
        let guard = unsafe { ImmediateExitGuard::new(flag) };
        while !shared.exit.stopping() {
            // A pause request set before the kick is seen here: either before this
            // KVM_RUN, or after the kick made it return.
            if shared.gate.should_park() {
                shared.gate.park();
                continue;
            }
            if let Some(exit) = self.step(&shared) {
                shared.exit.report(exit);
                break;
            }
        }
        drop(guard);
        tracing::debug!(vcpu = self.index, "vCPU thread done");
    }

    /// One `KVM_RUN`; returns how the VM ends if it does.
    fn step(&mut self, shared: &VcpuShared) -> Option<VmExit> {
        let index = self.index;
        let crash = |cause| Some(VmExit::Crashed { vcpu: index, cause });
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => {
                self.fd.set_kvm_immediate_exit(0);
                return None;
            }
            Err(e) => return crash(CrashCause::Run(e.errno())),
        };
        shared.first_exit.get_or_init(Instant::now);
        let m = &self.metrics;
        m.exits.fetch_add(1, Ordering::Relaxed);
        let handled = match exit {
            VcpuExit::IoIn(port, data) => {
                m.pio.fetch_add(1, Ordering::Relaxed);
                shared.pio.read(u64::from(port), data)
            }
            VcpuExit::IoOut(port, data) => {
                m.pio.fetch_add(1, Ordering::Relaxed);
                shared.pio.write(u64::from(port), data)
            }
            VcpuExit::MmioRead(addr, data) => {
                m.mmio.fetch_add(1, Ordering::Relaxed);
                shared.mmio.read(addr, data)
            }
            VcpuExit::MmioWrite(addr, data) => {
                m.mmio.fetch_add(1, Ordering::Relaxed);
                shared.mmio.write(addr, data)
            }
            VcpuExit::Intr => true,
            VcpuExit::Shutdown => return Some(VmExit::Reset(ResetCause::TripleFault)),
            VcpuExit::SystemEvent(..) => return Some(VmExit::Reset(ResetCause::SystemEvent)),
            VcpuExit::FailEntry(reason, _) => return crash(CrashCause::FailEntry(reason)),
            VcpuExit::InternalError => return crash(self.internal_error()),
            VcpuExit::Hlt => return crash(CrashCause::UnexpectedExit("hlt")),
            other => return crash(CrashCause::UnexpectedExit(exit_name(&other))),
        };
        if !handled {
            m.unhandled.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Details of `KVM_EXIT_INTERNAL_ERROR`, for the crash report.
    fn internal_error(&mut self) -> CrashCause {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, for which KVM fills the
        // `internal` member of the union; it is plain data.
        let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
        let rip = self.fd.get_regs().ok().map(|r| r.rip);
        CrashCause::Internal { suberror, rip }
    }
}

fn exit_name(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::Exception => "exception",
        VcpuExit::Hypercall(_) => "hypercall",
        VcpuExit::Debug(_) => "debug",
        VcpuExit::IrqWindowOpen => "irq window open",
        VcpuExit::Nmi => "nmi",
        VcpuExit::Watchdog => "watchdog",
        VcpuExit::Unknown => "unknown",
        _ => "other",
    }
}

/// A running vCPU thread.
pub struct VcpuHandle {
    index: u8,
    thread: JoinHandle<()>,
}

impl VcpuHandle {
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Gets the thread out of `KVM_RUN` (or keeps it from entering it next). The
    /// thread stays valid to signal until the handle is consumed by [`VcpuHandle::stop`].
    pub fn kick(&self) {
        if self.thread.is_finished() {
            return;
        }
        if let Err(e) = self.thread.kill(kick_signal()) {
            tracing::warn!(vcpu = self.index, error = %e, "kicking the vCPU thread");
        }
    }

    /// Kicks the thread (the exit latch must already say "stopping") until it ends
    /// or `timeout` passes. A thread that does not end is abandoned: it owns its vCPU
    /// fd and a reference to guest memory, so nothing it uses goes away under it.
    pub fn stop(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_micros(100);
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(vcpu = self.index, "vCPU thread did not stop; abandoning it");
                return false;
            }
            self.kick();
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(20));
        }
        self.thread.join().is_ok()
    }
}

//! A running VM: built from a [`VmConfig`], waited on, paused and resumed, stopped.
//!
//! Every method takes `&self`, so a VM can be shared (`Arc<Vmm>`) between the thread
//! that waits for its end and a control API thread.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use vm_memory::GuestMemoryMmap;

use crate::arch::x86_64::mptable;
use crate::arch::x86_64::regs::EntryState;
use crate::boot;
use crate::builder::{build_devices, virtio_cmdline, Devices};
use crate::config::VmConfig;
use crate::devices::thread::DeviceThread;
use crate::exit::{ExitLatch, VmExit};
use crate::metrics::{DeviceMetrics, MetricsSource};
use crate::vstate::kick;
use crate::vstate::memory;
use crate::vstate::pause::RunGate;
use crate::vstate::vcpu::{Vcpu, VcpuHandle, VcpuMetrics, VcpuShared};
use crate::vstate::vm::Vm;
use crate::Error;

/// How long [`Vmm::stop`] kicks a vCPU thread before abandoning it.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Vmm::pause`] waits for every vCPU to park.
const VCPU_PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often [`Vmm::pause`] kicks the vCPUs again while it waits.
const PAUSE_KICK_INTERVAL: Duration = Duration::from_millis(20);

/// Exit counters summed over the vCPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    pub exits: u64,
    pub pio: u64,
    pub mmio: u64,
    /// Accesses no device took (unmapped or refused by a bus).
    pub unhandled: u64,
}

/// A virtio device as the VMM placed it: its type, MMIO window, interrupt line and
/// host side (for `GET /vm/devices`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// `rng`, `vsock`, … (the virtio device type).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mmio_base: u64,
    pub mmio_size: u64,
    pub gsi: u32,
    /// What the device uses on the host, by name (vsock: `uds_path`, `guest_cid`).
    pub host: serde_json::Map<String, serde_json::Value>,
}

impl DeviceInfo {
    /// A device of virtio type `device_type` at `mmio_base`, with no host side yet.
    pub fn new(device_type: u32, mmio_base: u64, mmio_size: u64, gsi: u32) -> DeviceInfo {
        DeviceInfo {
            kind: virtio_type_name(device_type),
            mmio_base,
            mmio_size,
            gsi,
            host: serde_json::Map::new(),
        }
    }
}

/// The name of a virtio device type (virtio 1.2 §5).
pub fn virtio_type_name(device_type: u32) -> &'static str {
    match device_type {
        1 => "net",
        2 => "block",
        4 => "rng",
        19 => "vsock",
        26 => "fs",
        _ => "unknown",
    }
}

/// Why the VM could not be paused or resumed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    #[error("the VM has ended")]
    Ended,
    #[error("the VM is already paused")]
    AlreadyPaused,
    #[error("the VM is not paused")]
    NotPaused,
    #[error("only {parked} of {total} vCPUs parked within {timeout:?}; the VM runs on")]
    Timeout {
        parked: usize,
        total: usize,
        timeout: Duration,
    },
}

/// Ends a VM from another thread (a signal handler thread, say): the VM's
/// [`Vmm::wait`] returns [`VmExit::Stopped`] and the owner then calls [`Vmm::stop`].
#[derive(Clone)]
pub struct Stopper(Arc<ExitLatch>);

impl Stopper {
    pub fn stop(&self) {
        self.0.report(VmExit::Stopped);
    }
}

/// A VM whose vCPUs are running (or paused). Dropping it stops them and its device
/// threads.
pub struct Vmm {
    vcpus: Mutex<Vec<VcpuHandle>>,
    /// Stopped after the vCPUs, so no guest notification arrives while they end.
    device_threads: Mutex<Vec<DeviceThread>>,
    gate: Arc<RunGate>,
    vcpu_metrics: Vec<Arc<VcpuMetrics>>,
    device_metrics: Vec<DeviceMetrics>,
    device_info: Vec<DeviceInfo>,
    exit: Arc<ExitLatch>,
    created: Instant,
    first_exit: Arc<OnceLock<Instant>>,
    vm: Vm,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Vmm {
    /// Validates `config`, builds the VM and starts its vCPUs.
    pub fn start(config: VmConfig) -> Result<Vmm, Error> {
        let created = Instant::now();
        config.validate()?;
        kick::install_handler().map_err(Error::KickHandler)?;
        let mem_size = u64::from(config.memory_mib) << 20;
        // vhost-user backends (virtiofsd) map guest memory themselves: it must be a
        // shareable memfd then.
        let mem = if config.shared_fs.is_empty() {
            memory::create(mem_size)?
        } else {
            memory::create_shared(mem_size)?
        };
        let vm = Vm::new(mem)?;
        // Creating the vCPUs and the PIT each take a while in KVM: the vCPUs are made
        // on a thread of their own meanwhile.
        let (vcpus, rest) = std::thread::scope(|s| {
            let vcpus = s.spawn(|| create_vcpus(&vm, config.vcpus));
            let rest = prepare(&config, &vm);
            let vcpus = vcpus
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (vcpus, rest)
        });
        let (entry, exit, devices) = rest?;
        let vcpus = vcpus?;
        for vcpu in &vcpus {
            vcpu.set_entry(&entry)?;
        }
        let shared = VcpuShared {
            pio: Arc::new(devices.pio),
            mmio: Arc::new(devices.mmio),
            exit: exit.clone(),
            first_exit: Arc::default(),
            gate: Arc::default(),
        };
        let vmm = Vmm {
            vcpus: Mutex::new(Vec::with_capacity(vcpus.len())),
            device_threads: Mutex::new(devices.threads),
            gate: shared.gate.clone(),
            vcpu_metrics: vcpus.iter().map(Vcpu::metrics).collect(),
            device_metrics: devices.metrics,
            device_info: devices.info,
            exit,
            created,
            first_exit: shared.first_exit.clone(),
            vm,
        };
        for vcpu in vcpus {
            // On error, dropping `vmm` stops the vCPUs already running.
            let handle = vcpu.spawn(shared.clone())?;
            lock(&vmm.vcpus).push(handle);
        }
        tracing::info!(
            vcpus = config.vcpus,
            memory_mib = config.memory_mib,
            setup_us = created.elapsed().as_micros() as u64,
            "VM started"
        );
        Ok(vmm)
    }

    /// Waits up to `timeout` for the VM to end.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<VmExit> {
        self.exit.wait_timeout(timeout)
    }

    /// Waits for the VM to end.
    pub fn wait(&self) -> VmExit {
        loop {
            if let Some(exit) = self.exit.wait_timeout(Duration::from_secs(3600)) {
                return exit;
            }
        }
    }

    /// Ends the VM (if it has not ended) and stops its vCPU threads.
    pub fn stop(self) -> VmExit {
        self.shutdown()
    }

    /// Ends the VM (if it has not ended; a paused VM too) and stops its vCPU and device
    /// threads; returns how it ended. Later calls only return that.
    pub fn shutdown(&self) -> VmExit {
        // Reported before taking the vCPU list, so a pause in progress gives up.
        self.exit.report(VmExit::Stopped);
        self.gate.release();
        let vcpus = std::mem::take(&mut *lock(&self.vcpus));
        for vcpu in vcpus {
            vcpu.stop(VCPU_STOP_TIMEOUT);
        }
        // Ending a device thread releases its host side (the vsock socket).
        let threads = std::mem::take(&mut *lock(&self.device_threads));
        for thread in threads {
            thread.stop();
        }
        self.exit.get().unwrap_or(VmExit::Stopped)
    }

    /// Pauses the vCPUs: returns once every vCPU thread is out of `KVM_RUN` and parked.
    /// Device threads keep running (their host sides stay open; what they queue
    /// waits for the guest). A vCPU that does not park within 2 s fails the pause and
    /// the VM runs on.
    pub fn pause(&self) -> Result<(), PauseError> {
        let vcpus = lock(&self.vcpus);
        if self.exit.stopping() || vcpus.is_empty() {
            return Err(PauseError::Ended);
        }
        if !self.gate.request_pause() {
            return Err(if self.gate.is_paused() {
                PauseError::AlreadyPaused
            } else {
                PauseError::Ended
            });
        }
        let deadline = Instant::now() + VCPU_PAUSE_TIMEOUT;
        loop {
            // The threads stay joinable (so safe to signal) while `vcpus` is held.
            for vcpu in vcpus.iter() {
                vcpu.kick();
            }
            if self.gate.wait_parked(vcpus.len(), PAUSE_KICK_INTERVAL) {
                tracing::info!("VM paused");
                return Ok(());
            }
            if self.exit.stopping() {
                self.gate.resume();
                return Err(PauseError::Ended);
            }
            if Instant::now() >= deadline {
                let parked = self.gate.parked();
                self.gate.resume();
                let error = PauseError::Timeout {
                    parked,
                    total: vcpus.len(),
                    timeout: VCPU_PAUSE_TIMEOUT,
                };
                tracing::warn!(%error, "pause failed");
                return Err(error);
            }
        }
    }

    /// Lets the paused vCPUs run again.
    pub fn resume(&self) -> Result<(), PauseError> {
        if self.exit.stopping() {
            return Err(PauseError::Ended);
        }
        if !self.gate.resume() {
            return Err(PauseError::NotPaused);
        }
        tracing::info!("VM resumed");
        Ok(())
    }

    /// Whether the VM is paused.
    pub fn is_paused(&self) -> bool {
        self.gate.is_paused()
    }

    /// How the VM ended, once it has (or is ending).
    pub fn exit_status(&self) -> Option<VmExit> {
        self.exit.get()
    }

    /// Time since [`Vmm::start`] began.
    pub fn uptime(&self) -> Duration {
        self.created.elapsed()
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpu_metrics.len()
    }

    /// The virtio devices, in slot order.
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.device_info
    }

    /// A handle that ends the VM from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.exit.clone())
    }

    /// Guest memory, for inspection.
    pub fn memory(&self) -> &GuestMemoryMmap {
        self.vm.memory()
    }

    /// Time from the start of [`Vmm::start`] to the guest's first exit (its first
    /// port or MMIO access), once there was one.
    pub fn time_to_first_exit(&self) -> Option<Duration> {
        self.first_exit
            .get()
            .map(|t| t.saturating_duration_since(self.created))
    }

    /// Where the VM's metrics (boot time, exits, device counters) are read from.
    pub fn metrics(&self) -> MetricsSource {
        MetricsSource {
            created: self.created,
            first_exit: self.first_exit.clone(),
            vcpus: self.vcpu_metrics.clone(),
            devices: self.device_metrics.clone(),
        }
    }

    /// Exit counters summed over the vCPUs.
    pub fn stats(&self) -> VmStats {
        use std::sync::atomic::Ordering::Relaxed;
        self.vcpu_metrics
            .iter()
            .fold(VmStats::default(), |s, m| VmStats {
                exits: s.exits + m.exits.load(Relaxed),
                pio: s.pio + m.pio.load(Relaxed),
                mmio: s.mmio + m.mmio.load(Relaxed),
                unhandled: s.unhandled + m.unhandled.load(Relaxed),
            })
    }
}

/// vCPUs `0..count`, without their entry registers.
fn create_vcpus(vm: &Vm, count: u8) -> Result<Vec<Vcpu>, Error> {
    let supported = vm.supported_cpuid()?;
    (0..count)
        .map(|i| Vcpu::new(vm, &supported, i, count).map_err(Error::from))
        .collect()
}

/// Everything but the vCPUs: the PIT, the guest (loaded first, so a kernel or initrd
/// that does not load fails the start before any device, and the vsock socket,
/// exists), then the devices.
fn prepare(config: &VmConfig, vm: &Vm) -> Result<(EntryState, Arc<ExitLatch>, Devices), Error> {
    vm.create_pit()?;
    mptable::setup(vm.memory(), config.vcpus)?;
    let entry = boot::load(vm.memory(), &config.boot, &virtio_cmdline(config))?;
    let exit = Arc::new(ExitLatch::default());
    let devices = build_devices(config, vm, &exit)?;
    Ok((entry, exit, devices))
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let running = !lock(&self.vcpus).is_empty() || !lock(&self.device_threads).is_empty();
        if running {
            self.shutdown();
        }
    }
}

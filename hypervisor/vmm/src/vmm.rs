//! A running VM: built from a [`VmConfig`], waited on, stopped.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
use crate::vstate::vcpu::{Vcpu, VcpuHandle, VcpuMetrics, VcpuShared};
use crate::vstate::vm::Vm;
use crate::Error;

/// How long [`Vmm::stop`] kicks a vCPU thread before abandoning it.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Exit counters summed over the vCPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    pub exits: u64,
    pub pio: u64,
    pub mmio: u64,
    /// Accesses no device took (unmapped or refused by a bus).
    pub unhandled: u64,
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

/// A VM whose vCPUs are running. Dropping it stops them and its device threads.
pub struct Vmm {
    vcpus: Vec<VcpuHandle>,
    /// Stopped after the vCPUs, so no guest notification arrives while they end.
    device_threads: Vec<DeviceThread>,
    vcpu_metrics: Vec<Arc<VcpuMetrics>>,
    device_metrics: Vec<DeviceMetrics>,
    exit: Arc<ExitLatch>,
    created: Instant,
    first_exit: Arc<OnceLock<Instant>>,
    vm: Vm,
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
        };
        let mut vmm = Vmm {
            vcpus: Vec::with_capacity(vcpus.len()),
            device_threads: devices.threads,
            vcpu_metrics: vcpus.iter().map(Vcpu::metrics).collect(),
            device_metrics: devices.metrics,
            exit,
            created,
            first_exit: shared.first_exit.clone(),
            vm,
        };
        for vcpu in vcpus {
            // On error, dropping `vmm` stops the vCPUs already running.
            vmm.vcpus.push(vcpu.spawn(shared.clone())?);
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
    pub fn stop(mut self) -> VmExit {
        self.stop_vcpus()
    }

    fn stop_vcpus(&mut self) -> VmExit {
        self.exit.report(VmExit::Stopped);
        for vcpu in self.vcpus.drain(..) {
            vcpu.stop(VCPU_STOP_TIMEOUT);
        }
        // Ending a device thread releases its host side (the vsock socket).
        for thread in self.device_threads.drain(..) {
            thread.stop();
        }
        self.exit.get().unwrap_or(VmExit::Stopped)
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
        if !self.vcpus.is_empty() || !self.device_threads.is_empty() {
            self.stop_vcpus();
        }
    }
}

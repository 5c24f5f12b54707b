//! Wiring the devices of a VM onto its buses.

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{VIRTIO_IRQ_BASE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::config::{SerialOutput, VmConfig};
use crate::devices::legacy::debug_exit::DEBUG_EXIT_PORT;
use crate::devices::legacy::i8042::{I8042_PORT_BASE, I8042_PORT_LEN};
use crate::devices::legacy::serial::{COM1_GSI, COM1_PORT, COM1_PORT_LEN};
use crate::devices::legacy::{DebugExit, Serial, I8042};
use crate::devices::virtio::{MmioTransport, Rng, VirtioDevice, VirtioInterrupt};
use crate::devices::Bus;
use crate::exit::ExitLatch;
use crate::vstate::vm::Vm;
use crate::Error;

/// The buses of a VM, and the kernel command line parts announcing its devices.
pub struct Devices {
    pub pio: Bus,
    pub mmio: Bus,
    pub cmdline: Vec<String>,
}

/// Builds the legacy devices and the virtio devices `config` asks for.
pub fn build_devices(config: &VmConfig, vm: &Vm, exit: &Arc<ExitLatch>) -> Result<Devices, Error> {
    let mut devices = Devices {
        pio: Bus::new(),
        mmio: Bus::new(),
        cmdline: Vec::new(),
    };
    let serial_irq = new_irq(vm, COM1_GSI)?;
    let out = serial_output(&config.serial)?;
    let serial = Serial::new(serial_irq, out);
    devices.pio.insert(
        COM1_PORT.into(),
        COM1_PORT_LEN.into(),
        Arc::new(Mutex::new(serial)),
    )?;
    let i8042 = I8042::new(exit.clone());
    devices.pio.insert(
        I8042_PORT_BASE.into(),
        I8042_PORT_LEN.into(),
        Arc::new(Mutex::new(i8042)),
    )?;
    if config.debug_exit {
        let dev = DebugExit::new(exit.clone());
        devices
            .pio
            .insert(DEBUG_EXIT_PORT.into(), 1, Arc::new(Mutex::new(dev)))?;
    }

    let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
    if config.entropy {
        virtio.push(Box::new(Rng::new().map_err(Error::Entropy)?));
    }
    for (slot, device) in virtio.into_iter().enumerate() {
        add_virtio(&mut devices, vm, slot as u32, device)?;
    }
    Ok(devices)
}

fn add_virtio(
    devices: &mut Devices,
    vm: &Vm,
    slot: u32,
    device: Box<dyn VirtioDevice>,
) -> Result<(), Error> {
    let base = VIRTIO_MMIO_BASE + u64::from(slot) * VIRTIO_MMIO_SIZE;
    let gsi = VIRTIO_IRQ_BASE + slot;
    let interrupt = Arc::new(VirtioInterrupt::new(new_irq(vm, gsi)?));
    let transport = MmioTransport::new(device, vm.memory().clone(), interrupt)?;
    devices
        .mmio
        .insert(base, VIRTIO_MMIO_SIZE, Arc::new(Mutex::new(transport)))?;
    devices.cmdline.push(format!(
        "virtio_mmio.device={}K@{base:#x}:{gsi}",
        VIRTIO_MMIO_SIZE >> 10
    ));
    Ok(())
}

/// An eventfd wired to interrupt line `gsi`.
fn new_irq(vm: &Vm, gsi: u32) -> Result<EventFd, Error> {
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_irqfd(&evt, gsi)?;
    Ok(evt)
}

fn serial_output(out: &SerialOutput) -> Result<Box<dyn Write + Send>, Error> {
    match out {
        SerialOutput::File(path) => {
            let file = File::create(path).map_err(|source| Error::SerialLog {
                path: path.clone(),
                source,
            })?;
            Ok(Box::new(file))
        }
        SerialOutput::Stdout => Ok(Box::new(io::stdout())),
        SerialOutput::Discard => Ok(Box::new(io::sink())),
    }
}

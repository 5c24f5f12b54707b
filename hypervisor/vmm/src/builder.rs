//! Wiring the devices of a VM onto its buses.

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{VIRTIO_IRQ_BASE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::config::{DriveSpec, NetSpec, SerialOutput, SharedFsSpec, VmConfig, VsockSpec};
use crate::devices::legacy::debug_exit::DEBUG_EXIT_PORT;
use crate::devices::legacy::i8042::{I8042_PORT_BASE, I8042_PORT_LEN};
use crate::devices::legacy::serial::{COM1_GSI, COM1_PORT, COM1_PORT_LEN};
use crate::devices::legacy::{DebugExit, Serial, I8042};
use crate::devices::thread::DeviceThread;
use crate::devices::virtio::fs::NUM_QUEUES as FS_QUEUES;
use crate::devices::virtio::mmio::MmioMetrics;
use crate::devices::virtio::{
    Block, MmioTransport, Net, Rng, VirtioDevice, VirtioFs, VirtioInterrupt, Vsock,
};
use crate::devices::Bus;
use crate::exit::ExitLatch;
use crate::metrics::DeviceMetrics;
use crate::vmm::DeviceInfo;
use crate::vstate::vm::Vm;
use crate::Error;

/// The buses of a VM and its device threads.
pub struct Devices {
    pub pio: Bus,
    pub mmio: Bus,
    pub threads: Vec<DeviceThread>,
    /// The virtio devices' counters, in slot order.
    pub metrics: Vec<DeviceMetrics>,
    /// The virtio devices' places and host sides, in slot order.
    pub info: Vec<DeviceInfo>,
}

/// The virtio devices of a VM, in slot order.
enum Virtio<'a> {
    Entropy,
    Vsock(&'a VsockSpec),
    Drive(&'a DriveSpec),
    SharedFs(&'a SharedFsSpec),
    Net(&'a NetSpec),
}

fn virtio_devices(config: &VmConfig) -> Vec<Virtio<'_>> {
    let entropy = config.entropy.then_some(Virtio::Entropy);
    let vsock = config.vsock.as_ref().map(Virtio::Vsock);
    let drives = config.drives.iter().map(Virtio::Drive);
    let nets = config.nets.iter().map(Virtio::Net);
    let shared_fs = config.shared_fs.iter().map(Virtio::SharedFs);
    entropy
        .into_iter()
        .chain(vsock)
        .chain(drives)
        .chain(nets)
        .chain(shared_fs)
        .collect()
}

/// The kernel command line parts announcing the virtio devices `config` asks for
/// (known before any device exists, so the kernel can be loaded first).
pub fn virtio_cmdline(config: &VmConfig) -> Vec<String> {
    (0..virtio_devices(config).len() as u32)
        .map(|slot| {
            let (base, gsi) = slot_place(slot);
            format!(
                "virtio_mmio.device={}K@{base:#x}:{gsi}",
                VIRTIO_MMIO_SIZE >> 10
            )
        })
        .collect()
}

/// Builds the legacy devices and the virtio devices `config` asks for.
pub fn build_devices(config: &VmConfig, vm: &Vm, exit: &Arc<ExitLatch>) -> Result<Devices, Error> {
    let mut devices = Devices {
        pio: Bus::new(),
        mmio: Bus::new(),
        threads: Vec::new(),
        metrics: Vec::new(),
        info: Vec::new(),
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

    for (slot, kind) in virtio_devices(config).into_iter().enumerate() {
        let slot = slot as u32;
        match kind {
            Virtio::Entropy => {
                let rng = Rng::new().map_err(Error::Entropy)?;
                let device = rng.metrics();
                let transport = add_virtio(&mut devices, vm, slot, Box::new(rng))?;
                devices
                    .metrics
                    .push(DeviceMetrics::Rng { transport, device });
            }
            Virtio::Vsock(spec) => {
                let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
                register_queue_notify(vm, &kick, slot);
                let (vsock, thread) = Vsock::new(spec.device_config(), kick)?;
                devices.threads.push(thread);
                let (glue, device) = (vsock.metrics(), vsock.device_metrics());
                let transport = add_virtio(&mut devices, vm, slot, Box::new(vsock))?;
                devices.metrics.push(DeviceMetrics::Vsock {
                    transport,
                    glue,
                    device,
                });
                describe_host(
                    &mut devices,
                    [
                        ("uds_path", spec.uds_path.to_string_lossy().into()),
                        ("guest_cid", spec.guest_cid.into()),
                    ],
                );
            }
            Virtio::Drive(spec) => {
                let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
                register_queue_notify(vm, &kick, slot);
                let (block, thread) = Block::new(spec, kick)?;
                devices.threads.push(thread);
                let device = block.metrics();
                let transport = add_virtio(&mut devices, vm, slot, Box::new(block))?;
                devices
                    .metrics
                    .push(DeviceMetrics::Block { transport, device });
                describe_host(
                    &mut devices,
                    [
                        ("path", spec.path.to_string_lossy().into()),
                        ("read_only", spec.read_only.into()),
                    ],
                );
            }
            Virtio::SharedFs(spec) => {
                let new_kick = || EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd);
                let kicks: [EventFd; FS_QUEUES] = [new_kick()?, new_kick()?];
                for (index, kick) in kicks.iter().enumerate() {
                    register_queue_notify_datamatch(vm, kick, slot, index as u32);
                }
                let (fs, thread) = VirtioFs::new(spec, kicks)?;
                devices.threads.push(thread);
                let device = fs.metrics();
                let transport = add_virtio(&mut devices, vm, slot, Box::new(fs))?;
                devices
                    .metrics
                    .push(DeviceMetrics::Fs { transport, device });
                describe_host(
                    &mut devices,
                    [
                        ("socket_path", spec.socket_path.to_string_lossy().into()),
                        ("tag", spec.tag.clone().into()),
                    ],
                );
            }
            Virtio::Net(spec) => {
                let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
                register_queue_notify(vm, &kick, slot);
                let (net, thread) = Net::new(spec, kick)?;
                devices.threads.push(thread);
                let device = net.metrics();
                let mac = net.mac().to_string();
                let transport = add_virtio(&mut devices, vm, slot, Box::new(net))?;
                devices.metrics.push(DeviceMetrics::Net {
                    transport,
                    device,
                    tap: spec.tap.clone(),
                });
                describe_host(
                    &mut devices,
                    [("tap", spec.tap.clone().into()), ("mac", mac.into())],
                );
            }
        }
    }
    Ok(devices)
}

/// The MMIO window and interrupt line of virtio slot `slot`.
fn slot_place(slot: u32) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + u64::from(slot) * VIRTIO_MMIO_SIZE,
        VIRTIO_IRQ_BASE + slot,
    )
}

/// Has KVM signal `kick` on writes to slot `slot`'s QueueNotify register, so queue
/// notifications wake the device thread without a VM exit. Where KVM refuses, the
/// write exits to the transport, which kicks the device itself.
fn register_queue_notify(vm: &Vm, kick: &EventFd, slot: u32) {
    let (base, _) = slot_place(slot);
    let addr = base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY);
    if let Err(error) = vm.register_ioevent(kick, addr) {
        tracing::warn!(%error, "no ioeventfd: queue notifications will exit to the VMM");
    }
}

/// Has KVM signal `kick` on writes of `queue` to slot `slot`'s QueueNotify register
/// (one eventfd per queue). Where KVM refuses, the write exits to the transport.
fn register_queue_notify_datamatch(vm: &Vm, kick: &EventFd, slot: u32, queue: u32) {
    let (base, _) = slot_place(slot);
    let addr = base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY);
    if let Err(error) = vm.register_ioevent_datamatch(kick, addr, queue) {
        tracing::warn!(%error, queue, "no ioeventfd: queue notifications will exit to the VMM");
    }
}

fn add_virtio(
    devices: &mut Devices,
    vm: &Vm,
    slot: u32,
    device: Box<dyn VirtioDevice>,
) -> Result<Arc<MmioMetrics>, Error> {
    let (base, gsi) = slot_place(slot);
    let info = DeviceInfo::new(device.device_type(), base, VIRTIO_MMIO_SIZE, gsi);
    let interrupt = Arc::new(VirtioInterrupt::new(new_irq(vm, gsi)?));
    let transport = MmioTransport::new(device, vm.memory().clone(), interrupt, base)?;
    let metrics = transport.metrics();
    devices
        .mmio
        .insert(base, VIRTIO_MMIO_SIZE, Arc::new(Mutex::new(transport)))?;
    devices.info.push(info);
    Ok(metrics)
}

/// Records the host side of the virtio device added last.
fn describe_host<const N: usize>(devices: &mut Devices, host: [(&str, serde_json::Value); N]) {
    if let Some(info) = devices.info.last_mut() {
        info.host
            .extend(host.into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::BootSource;
    use std::path::PathBuf;

    #[test]
    fn virtio_devices_are_announced_in_slot_order() {
        let mut config = VmConfig::new(BootSource::Raw {
            code: vec![0x90],
            load_addr: 0x1000,
        });
        assert!(virtio_cmdline(&config).is_empty());
        config.vsock = Some(VsockSpec {
            guest_cid: 3,
            uds_path: "/tmp/v.sock".into(),
        });
        assert_eq!(
            virtio_cmdline(&config),
            ["virtio_mmio.device=4K@0xd0000000:5"]
        );
        config.entropy = true;
        assert_eq!(
            virtio_cmdline(&config),
            [
                "virtio_mmio.device=4K@0xd0000000:5",
                "virtio_mmio.device=4K@0xd0001000:6"
            ]
        );
        assert!(matches!(virtio_devices(&config)[1], Virtio::Vsock(_)));
        config.drives = vec![
            DriveSpec {
                path: "/a.img".into(),
                read_only: false,
                id: None,
            },
            DriveSpec {
                path: "/b.img".into(),
                read_only: true,
                id: None,
            },
        ];
        let cmdline = virtio_cmdline(&config);
        assert_eq!(cmdline.len(), 4);
        assert_eq!(cmdline[3], "virtio_mmio.device=4K@0xd0003000:8");
        match &virtio_devices(&config)[3] {
            Virtio::Drive(spec) => assert_eq!(spec.path, PathBuf::from("/b.img")),
            _ => panic!("drives come after entropy and vsock"),
        }
        config.nets = vec![
            NetSpec {
                tap: "tap0".into(),
                mac: None,
            },
            NetSpec {
                tap: "tap1".into(),
                mac: None,
            },
        ];
        config.shared_fs = vec![SharedFsSpec {
            socket_path: "/tmp/fs.sock".into(),
            tag: "rootfs".into(),
        }];
        assert_eq!(
            virtio_cmdline(&config)[6],
            "virtio_mmio.device=4K@0xd0006000:11"
        );
        let slots = virtio_devices(&config);
        assert_eq!(slots.len(), 7);
        assert!(matches!(slots[4], Virtio::Net(n) if n.tap == "tap0"));
        assert!(matches!(slots[5], Virtio::Net(n) if n.tap == "tap1"));
        assert!(matches!(slots[6], Virtio::SharedFs(_)));
    }
}

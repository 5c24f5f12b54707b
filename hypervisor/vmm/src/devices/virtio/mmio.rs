//! The virtio-mmio transport (virtio 1.2 §4.2.2, register layout "version 2").
//!
//! Every register access comes from the guest. Registers below the config space
//! take only aligned 32-bit accesses; status transitions follow the driver
//! initialization sequence; feature and queue registers are writable only in the
//! phase the spec allows. Anything else is ignored and counted — never a panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::queue::{check_ready_queues, new_queues, write_field, QueueError, QueueField};
use super::{ActiveDevice, VirtioDevice, VirtioInterrupt};
use crate::devices::BusDevice;
use crate::vmm::virtio_type_name;

/// "virt", little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) register layout.
pub const MMIO_VERSION: u32 = 2;
/// Our vendor id: "CCN\0".
pub const VENDOR_ID: u32 = 0x004e_4343;
/// Start of the device-specific config space.
pub const CONFIG_SPACE_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;

/// Counters for what the transport refused or did.
#[derive(Debug, Default)]
pub struct MmioMetrics {
    /// Accesses with a bad width or alignment, or to no register.
    pub invalid_access: AtomicU64,
    /// Writes refused in the current device state, or with a bad value.
    pub refused_write: AtomicU64,
    /// Queue notifications delivered to the device.
    pub notify: AtomicU64,
    pub activations: AtomicU64,
    pub activate_failures: AtomicU64,
}

/// A virtio device behind the mmio register interface.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    /// Where the transport's registers are, for the log.
    mmio_base: u64,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    activated: bool,
    metrics: Arc<MmioMetrics>,
}

impl MmioTransport {
    /// Wraps `device`, whose registers are at `mmio_base`; its queues live in `mem`,
    /// its interrupt is `interrupt`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        mmio_base: u64,
    ) -> Result<MmioTransport, QueueError> {
        let queues = new_queues(device.queue_max_sizes())?;
        Ok(MmioTransport {
            device,
            mmio_base,
            mem,
            interrupt,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            activated: false,
            metrics: Arc::default(),
        })
    }

    pub fn metrics(&self) -> Arc<MmioMetrics> {
        self.metrics.clone()
    }

    /// The device status register: what the driver set, plus DEVICE_NEEDS_RESET once
    /// an active device failed.
    pub fn status(&self) -> u32 {
        if self.activated && self.interrupt.needs_reset() {
            self.status | NEEDS_RESET
        } else {
            self.status
        }
    }

    /// Whether the device was activated (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Features the driver acknowledged.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn invalid(&self) {
        self.metrics.invalid_access.fetch_add(1, Ordering::Relaxed);
    }

    fn refuse(&self) {
        self.metrics.refused_write.fetch_add(1, Ordering::Relaxed);
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u32) -> Option<u32> {
        let value = match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status(),
            // No shared memory regions: length reads as all ones ("-1").
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => return None,
        };
        Some(value)
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => self.write_queue(QueueField::Size, value),
            VIRTIO_MMIO_QUEUE_DESC_LOW => self.write_queue(QueueField::DescLow, value),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => self.write_queue(QueueField::DescHigh, value),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => self.write_queue(QueueField::DriverLow, value),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self.write_queue(QueueField::DriverHigh, value),
            VIRTIO_MMIO_QUEUE_USED_LOW => self.write_queue(QueueField::DeviceLow, value),
            VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue(QueueField::DeviceHigh, value),
            VIRTIO_MMIO_QUEUE_READY => self.write_queue_ready(value),
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.write_status(value),
            VIRTIO_MMIO_SHM_SEL => {}
            _ => self.invalid(),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & (DRIVER | FEATURES_OK) != DRIVER {
            return self.refuse();
        }
        let shift = match self.driver_features_sel {
            0 => 0,
            1 => 32,
            _ => return self.refuse(),
        };
        let offered = self.device.features();
        let page = u64::from(value) << shift;
        if page & !offered != 0 {
            // Features the device never offered are dropped.
            self.refuse();
        }
        self.acked_features = (self.acked_features & !(0xffff_ffffu64 << shift)) | (page & offered);
    }

    /// Queue registers are writable after FEATURES_OK, before DRIVER_OK, while the
    /// selected queue exists and is not ready.
    fn queue_writable(&self) -> Option<usize> {
        let index = self.queue_sel as usize;
        let phase = self.status & (FEATURES_OK | DRIVER_OK) == FEATURES_OK;
        let queue = self.queues.get(index)?;
        (phase && !queue.ready()).then_some(index)
    }

    fn write_queue(&mut self, field: QueueField, value: u32) {
        let Some(index) = self.queue_writable() else {
            return self.refuse();
        };
        if write_field(&mut self.queues[index], field, value).is_err() {
            self.refuse();
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let index = self.queue_sel as usize;
        let phase = self.status & (FEATURES_OK | DRIVER_OK) == FEATURES_OK;
        match (self.queues.get_mut(index), value) {
            (Some(queue), 0 | 1) if phase => queue.set_ready(value == 1),
            _ => self.refuse(),
        }
    }

    fn notify(&mut self, value: u32) {
        match u16::try_from(value) {
            Ok(index) if self.activated && usize::from(index) < self.queues.len() => {
                self.metrics.notify.fetch_add(1, Ordering::Relaxed);
                self.device.queue_notify(index);
            }
            _ => self.refuse(),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        let old = self.status();
        let added = value & !old;
        let has = |bit: u32| value & bit != 0;
        let out_of_order = (has(DRIVER) && !has(ACKNOWLEDGE))
            || (has(FEATURES_OK) && !has(DRIVER))
            || (added & DRIVER_OK != 0 && old & FEATURES_OK == 0);
        // Bits only clear through a reset, and NEEDS_RESET is the device's to set.
        if old & !value != 0 || added & NEEDS_RESET != 0 || out_of_order {
            return self.refuse();
        }
        let mut status = value;
        if added & FEATURES_OK != 0 && self.acked_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            // A legacy driver: leave FEATURES_OK clear so it sees the refusal.
            status &= !FEATURES_OK;
        }
        self.status = status;
        if added & DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let checked = check_ready_queues(&self.queues, &self.mem).map_err(|e| e.to_string());
        // The device gets its own copies; the transport keeps answering register reads.
        let copies = checked.and_then(|()| {
            self.queues
                .iter()
                .map(|q| Queue::try_from(q.state()).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        });
        let result = copies.and_then(|queues| {
            self.device
                .activate(ActiveDevice {
                    mem: self.mem.clone(),
                    queues,
                    interrupt: self.interrupt.clone(),
                    acked_features: self.acked_features,
                })
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => {
                self.activated = true;
                self.metrics.activations.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(
                    device = virtio_type_name(self.device.device_type()),
                    mmio_base = %format_args!("{:#x}", self.mmio_base),
                    %error,
                    "virtio device activation failed"
                );
                self.metrics
                    .activate_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.status |= NEEDS_RESET;
                // The driver learns of NEEDS_RESET from a config change interrupt.
                let _ = self.interrupt.signal_config_change();
            }
        }
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.queues.iter_mut().for_each(Queue::reset);
        self.interrupt.clear();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            return self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
        }
        let value = match register_offset(offset, data.len()) {
            Some(reg) => self.read_register(reg),
            None => None,
        };
        match value {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => {
                self.invalid();
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            return self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
        }
        match (
            register_offset(offset, data.len()),
            <[u8; 4]>::try_from(data),
        ) {
            (Some(reg), Ok(bytes)) => self.write_register(reg, u32::from_le_bytes(bytes)),
            _ => self.invalid(),
        }
    }
}

/// A register offset, for an aligned 4-byte access below the config space.
fn register_offset(offset: u64, len: usize) -> Option<u32> {
    (len == 4 && offset.is_multiple_of(4) && offset < CONFIG_SPACE_OFFSET).then_some(offset as u32)
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;

//! The COM1 16550 UART (vm-superio), its output going to a log file, its interrupt
//! to an irqfd.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_superio::serial::NoEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::BusDevice;

/// COM1's ports and interrupt line.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_PORT_LEN: u16 = 8;
pub const COM1_GSI: u32 = 4;

/// An interrupt raised by writing an eventfd registered as an irqfd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Counters for the serial port.
#[derive(Debug, Default)]
pub struct SerialMetrics {
    /// Bytes the guest transmitted.
    pub tx_bytes: AtomicU64,
    /// Failed writes to the output or interrupt triggers.
    pub errors: AtomicU64,
    /// Accesses wider than one byte (ignored).
    pub invalid: AtomicU64,
}

/// The serial port as a bus device.
pub struct Serial {
    uart: vm_superio::Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
    metrics: Arc<SerialMetrics>,
}

impl Serial {
    /// A UART whose output goes to `out` and whose interrupt is `irq`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Serial {
        Serial {
            uart: vm_superio::Serial::new(EventFdTrigger(irq), out),
            metrics: Arc::default(),
        }
    }

    pub fn metrics(&self) -> Arc<SerialMetrics> {
        self.metrics.clone()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            self.metrics.invalid.fetch_add(1, Ordering::Relaxed);
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let &[byte] = data else {
            self.metrics.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if offset == 0 {
            self.metrics.tx_bytes.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = self.uart.write(offset as u8, byte) {
            if self.metrics.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = ?e, "serial output failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_output() {
        let out = Shared::default();
        let mut serial = Serial::new(EventFd::new(0).unwrap(), Box::new(out.clone()));
        for b in b"hi" {
            serial.write(0, &[*b]);
        }
        serial.write(0, &[1, 2]);
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert_eq!(serial.metrics().invalid.load(Ordering::Relaxed), 1);
        let mut lsr = [0u8];
        serial.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
    }
}

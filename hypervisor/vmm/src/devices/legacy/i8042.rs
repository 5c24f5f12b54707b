//! Just enough of the i8042 keyboard controller for Linux: its probe finds a
//! controller that passes its self test, and "pulse reset" (0xFE to the command
//! port, how Linux reboots by default) ends the VM. No keyboard is attached.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::devices::BusDevice;
use crate::exit::{ExitLatch, ResetCause, VmExit};

/// First port of the controller; the bus range is 0x60..0x65 (0x61 is KVM's PIT speaker).
pub const I8042_PORT_BASE: u16 = 0x60;
/// Length of the bus range.
pub const I8042_PORT_LEN: u16 = 5;
const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_PULSE_RESET: u8 = 0xfe;
const SELF_TEST_OK: u8 = 0x55;
/// Output buffer depth; later bytes are dropped.
const BUFFER_MAX: usize = 16;

/// The i8042 controller.
pub struct I8042 {
    exit: Arc<ExitLatch>,
    /// Controller configuration byte.
    ctr: u8,
    /// The command whose data byte the next data-port write is.
    pending: Option<u8>,
    output: VecDeque<u8>,
}

impl I8042 {
    pub fn new(exit: Arc<ExitLatch>) -> I8042 {
        I8042 {
            exit,
            ctr: 0,
            pending: None,
            output: VecDeque::new(),
        }
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < BUFFER_MAX {
            self.output.push_back(byte);
        }
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT => self.pending = Some(cmd),
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_KBD_TEST => self.push(0),
            CMD_PULSE_RESET => {
                self.exit.report(VmExit::Reset(ResetCause::I8042));
            }
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = byte,
            // Output port bit 0 low holds the CPU in reset.
            Some(CMD_WRITE_OUTPUT_PORT) if byte & 1 == 0 => {
                self.exit.report(VmExit::Reset(ResetCause::I8042));
            }
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.output.pop_front().unwrap_or(0),
            COMMAND_OFFSET => {
                let full = if self.output.is_empty() {
                    0
                } else {
                    STATUS_OUTPUT_FULL
                };
                STATUS_SYSTEM_FLAG | full
            }
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else { return };
        match offset {
            DATA_OFFSET => self.data(byte),
            COMMAND_OFFSET => self.command(byte),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn pulse_reset_ends_the_vm() {
        let latch = Arc::new(ExitLatch::default());
        let mut dev = I8042::new(latch.clone());
        dev.write(COMMAND_OFFSET, &[CMD_PULSE_RESET]);
        assert_eq!(latch.get(), Some(VmExit::Reset(ResetCause::I8042)));
    }

    #[test]
    fn self_test_and_configuration_byte_round_trip() {
        let latch = Arc::new(ExitLatch::default());
        let mut dev = I8042::new(latch.clone());
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 1);
        assert_eq!(read(&mut dev, DATA_OFFSET), SELF_TEST_OK);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[0x47]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x47);
        for _ in 0..100 {
            dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        assert_eq!(dev.output.len(), BUFFER_MAX);
        assert_eq!(latch.get(), None);
    }
}

//! A port that ends the VM with the byte written to it. Only test guests use it, and
//! only when the VM configuration turns it on.

use std::sync::Arc;

use crate::devices::BusDevice;
use crate::exit::{ExitLatch, VmExit};

/// The debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0x501;

/// Ends the VM with [`VmExit::DebugExit`] on any write.
pub struct DebugExit {
    exit: Arc<ExitLatch>,
}

impl DebugExit {
    pub fn new(exit: Arc<ExitLatch>) -> DebugExit {
        DebugExit { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let code = data.first().copied().unwrap_or(0);
        self.exit.report(VmExit::DebugExit(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_reports_its_first_byte() {
        let latch = Arc::new(ExitLatch::default());
        let mut dev = DebugExit::new(latch.clone());
        dev.write(0, &[0x2a, 0xff]);
        assert_eq!(latch.get(), Some(VmExit::DebugExit(0x2a)));
    }
}

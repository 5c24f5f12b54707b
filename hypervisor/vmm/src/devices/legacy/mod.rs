//! Legacy PC devices: the 16550 serial port, the i8042 controller (reset only, in
//! effect) and a debug-exit port for test guests.

pub mod debug_exit;
pub mod i8042;
pub mod serial;

pub use debug_exit::DebugExit;
pub use i8042::I8042;
pub use serial::{EventFdTrigger, Serial};

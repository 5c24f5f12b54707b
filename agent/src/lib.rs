//! cocoon-agent: PID 1 of a Cocoon pod VM.
//!
//! As PID 1 it sets the guest up ([`init`]) and serves the agent API on vsock port 1024.
//! The same binary runs as an ordinary host process listening on a unix socket, which is
//! how the agent's own tests run without a VM.

pub mod boot_clock;
pub mod cgroups;
pub mod container;
pub mod error;
pub mod guest_info;
pub mod helper;
pub mod init;
pub mod io;
pub mod listen;
pub mod pods;
pub mod rpc;
pub mod sandbox;
pub mod server;
pub mod sys;
pub mod undo;
pub mod validate;

/// The agent's version, reported to the host.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

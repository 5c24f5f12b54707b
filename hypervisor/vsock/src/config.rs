//! Device configuration, validated before anything is built.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::HOST_CID;

/// The longest path a unix socket address holds (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a [`VsockConfig`] was rejected; each variant names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// CIDs 0–2 are reserved and `u32::MAX` means "any"; Linux guests use 32-bit CIDs.
    #[error("guest_cid {0} is reserved or out of range (3..=4294967294)")]
    GuestCid(u64),
    /// A socket path is empty.
    #[error("{field}: empty path")]
    EmptyPath {
        /// The config field or flag.
        field: &'static str,
    },
    /// A socket path does not fit in `sun_path`.
    #[error(
        "{field}: path is {len} bytes, longer than the {MAX_SOCKET_PATH} a unix socket allows"
    )]
    PathTooLong {
        /// The config field or flag.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// `buf_alloc` outside 4 KiB..=64 MiB.
    #[error("buf_alloc {0} out of range (4096..=67108864)")]
    BufAlloc(u32),
    /// A limit that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// A timeout that must be positive is 0.
    #[error("{0} must be positive")]
    ZeroTimeout(&'static str),
}

/// Configuration of one vsock device.
#[derive(Clone, Debug)]
pub struct VsockConfig {
    /// The guest's context id (≥ 3), exposed in the device's config space.
    pub guest_cid: u64,
    /// The hybrid-vsock unix socket: host clients connect here and write `CONNECT <port>\n`;
    /// guest connections to host port P go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
    /// Receive buffer advertised to the guest per connection; also the most guest→host
    /// bytes buffered per connection when the host reader is slow.
    pub buf_alloc: u32,
    /// Most connections at once (both directions, including ones being set up).
    pub max_connections: usize,
    /// Most host clients that have connected but not yet sent their `CONNECT` line.
    pub max_pending_clients: usize,
    /// Most queued connection-less replies (RSTs) for the guest; more are dropped and counted.
    pub control_queue_len: usize,
    /// How long a host-initiated connection waits for the guest's answer.
    pub connect_timeout: Duration,
    /// How long a closing connection waits for the guest before it is reset.
    pub shutdown_timeout: Duration,
    /// How long a host client has to send its `CONNECT` line.
    pub handshake_timeout: Duration,
}

impl VsockConfig {
    /// A configuration with the default limits and timeouts.
    pub fn new(guest_cid: u64, uds_path: impl Into<PathBuf>) -> Self {
        VsockConfig {
            guest_cid,
            uds_path: uds_path.into(),
            buf_alloc: 256 * 1024,
            max_connections: 1024,
            max_pending_clients: 64,
            control_queue_len: 1024,
            connect_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.guest_cid <= HOST_CID || self.guest_cid >= u64::from(u32::MAX) {
            return Err(ConfigError::GuestCid(self.guest_cid));
        }
        check_socket_path("uds_path", &self.uds_path)?;
        if !(4096..=64 * 1024 * 1024).contains(&self.buf_alloc) {
            return Err(ConfigError::BufAlloc(self.buf_alloc));
        }
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_pending_clients", self.max_pending_clients),
            ("control_queue_len", self.control_queue_len),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        for (name, v) in [
            ("connect_timeout", self.connect_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if v.is_zero() {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        Ok(())
    }
}

/// Checks that `path` is a usable unix socket path (non-empty, fits in `sun_path`).
pub fn check_socket_path(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    let len = path.as_os_str().as_bytes().len();
    if len == 0 {
        return Err(ConfigError::EmptyPath { field });
    }
    if len > MAX_SOCKET_PATH {
        return Err(ConfigError::PathTooLong { field, len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(VsockConfig::new(3, "/tmp/v.sock").validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_fields() {
        for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(
                VsockConfig::new(cid, "/x").validate(),
                Err(ConfigError::GuestCid(cid))
            );
        }
        let long = "/".repeat(MAX_SOCKET_PATH + 1);
        assert!(matches!(
            VsockConfig::new(3, long).validate(),
            Err(ConfigError::PathTooLong {
                field: "uds_path",
                ..
            })
        ));
        assert!(matches!(
            VsockConfig::new(3, "").validate(),
            Err(ConfigError::EmptyPath { .. })
        ));
        let mut c = VsockConfig::new(3, "/x");
        c.buf_alloc = 10;
        assert_eq!(c.validate(), Err(ConfigError::BufAlloc(10)));
        let mut c = VsockConfig::new(3, "/x");
        c.max_connections = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroLimit("max_connections")));
        let mut c = VsockConfig::new(3, "/x");
        c.shutdown_timeout = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroTimeout("shutdown_timeout"))
        );
    }
}

//! The VM configuration, validated before anything is built.

use std::path::PathBuf;

use cocoon_vsock::VsockConfig;
use serde::{Deserialize, Serialize};

use crate::boot::BootSource;

/// Most vCPUs: what the MP table holds and our guest kernel's NR_CPUS.
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory.
pub const MIN_MEMORY_MIB: u32 = 2;
/// Most guest memory (the MMIO gap leaves 3 GiB below 4 GiB).
pub const MAX_MEMORY_MIB: u32 = 256 * 1024;

/// Where the serial console's output goes. JSON: `"discard"`, `"stdout"`,
/// `{"file": "/path"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialOutput {
    #[default]
    Discard,
    /// A file, created or truncated.
    File(PathBuf),
    /// This process's standard output.
    Stdout,
}

/// The vsock device: the guest's context id and the hybrid-vsock socket on the host
/// (created at start, removed when the VM ends).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockSpec {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

/// What to build. As JSON (the API's `PUT /vm/config`), every field but `boot` may be
/// left out and takes the value [`VmConfig::new`] gives it; unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    pub boot: BootSource,
    /// Where the serial console's output goes.
    #[serde(default)]
    pub serial: SerialOutput,
    /// Adds the debug-exit port (test guests).
    #[serde(default)]
    pub debug_exit: bool,
    /// Adds a virtio-rng device.
    #[serde(default)]
    pub entropy: bool,
    /// Adds a virtio-vsock device.
    #[serde(default)]
    pub vsock: Option<VsockSpec>,
}

fn default_vcpus() -> u8 {
    1
}

fn default_memory_mib() -> u32 {
    128
}

impl VmConfig {
    /// A configuration with one vCPU, 128 MiB, the serial output discarded and no
    /// optional devices.
    pub fn new(boot: BootSource) -> VmConfig {
        VmConfig {
            vcpus: default_vcpus(),
            memory_mib: default_memory_mib(),
            boot,
            serial: SerialOutput::Discard,
            debug_exit: false,
            entropy: false,
            vsock: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::MemoryMib(self.memory_mib));
        }
        if let BootSource::Raw { code, .. } = &self.boot {
            if code.is_empty() {
                return Err(ConfigError::EmptyCode);
            }
        }
        if let Some(vsock) = &self.vsock {
            vsock.device_config().validate()?;
        }
        Ok(())
    }
}

impl VsockSpec {
    /// The device's configuration: these fields, default limits and timeouts.
    pub fn device_config(&self) -> VsockConfig {
        VsockConfig::new(self.guest_cid, &self.uds_path)
    }
}

/// A configuration field out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("vcpus: {0} is not in 1..={MAX_VCPUS}")]
    Vcpus(u8),
    #[error("memory_mib: {0} is not in {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}")]
    MemoryMib(u32),
    #[error("boot: raw code is empty")]
    EmptyCode,
    #[error("vsock")]
    Vsock(#[from] cocoon_vsock::ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_range_checked() {
        let raw = BootSource::Raw {
            code: vec![0x90],
            load_addr: 0x1000,
        };
        let ok = VmConfig::new(raw);
        assert_eq!(ok.validate(), Ok(()));
        let bad = VmConfig {
            vcpus: 0,
            ..ok.clone()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Vcpus(0)));
        let bad = VmConfig {
            vcpus: 33,
            ..ok.clone()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Vcpus(33)));
        let bad = VmConfig {
            memory_mib: 1,
            ..ok.clone()
        };
        assert_eq!(bad.validate(), Err(ConfigError::MemoryMib(1)));
        let empty = BootSource::Raw {
            code: vec![],
            load_addr: 0,
        };
        assert_eq!(VmConfig::new(empty).validate(), Err(ConfigError::EmptyCode));
        let bad = VmConfig {
            vsock: Some(VsockSpec {
                guest_cid: 2,
                uds_path: "/tmp/v.sock".into(),
            }),
            ..ok.clone()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::Vsock(cocoon_vsock::ConfigError::GuestCid(2)))
        );
    }
}

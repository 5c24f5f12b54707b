//! The VM configuration, validated before anything is built.

use std::path::PathBuf;

use cocoon_vsock::VsockConfig;

use crate::boot::BootSource;
use crate::devices::virtio::net::tap::{valid_ifname, MAX_IFNAME_LEN};
use crate::devices::virtio::net::MacAddr;

/// Most vCPUs: what the MP table holds and our guest kernel's NR_CPUS.
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory.
pub const MIN_MEMORY_MIB: u32 = 2;
/// Most guest memory (the MMIO gap leaves 3 GiB below 4 GiB).
pub const MAX_MEMORY_MIB: u32 = 256 * 1024;

/// Where the serial console's output goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockSpec {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

/// A virtio-net device whose host side is the tap interface `tap`: opened as is if it
/// exists (a persistent tap the runtime made in the pod's network namespace), created
/// otherwise (and gone again when the VM ends).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// The host interface name (at most 15 bytes).
    pub tap: String,
    /// The guest's MAC address; unset, a locally administered one derived from `tap`
    /// (the same on every run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

impl NetSpec {
    /// Checks the fields on their own (`VmConfig::validate` also refuses a tap used
    /// twice).
    pub fn validate(&self) -> Result<(), NetSpecError> {
        if !valid_ifname(&self.tap) {
            return Err(NetSpecError::Tap(self.tap.clone()));
        }
        match self.mac {
            Some(mac) if mac.is_multicast() || mac.octets() == [0; 6] => {
                Err(NetSpecError::Mac(mac))
            }
            _ => Ok(()),
        }
    }
}

/// A [`NetSpec`] field that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetSpecError {
    #[error(
        "tap: {0:?} is not an interface name (1 to {MAX_IFNAME_LEN} bytes, no '/', ':', '%' \
         or whitespace, not '.' or '..')"
    )]
    Tap(String),
    #[error("tap: {0:?} is already used by another net device")]
    DuplicateTap(String),
    #[error("mac: {0} is a multicast or all-zero address")]
    Mac(MacAddr),
}

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub vcpus: u8,
    pub memory_mib: u32,
    pub boot: BootSource,
    /// Where the serial console's output goes.
    pub serial: SerialOutput,
    /// Adds the debug-exit port (test guests).
    pub debug_exit: bool,
    /// Adds a virtio-rng device.
    pub entropy: bool,
    /// Adds a virtio-vsock device.
    pub vsock: Option<VsockSpec>,
    /// Adds a virtio-net device for each.
    pub nets: Vec<NetSpec>,
}

impl VmConfig {
    /// A configuration with one vCPU, 128 MiB, the serial output discarded and no
    /// optional devices.
    pub fn new(boot: BootSource) -> VmConfig {
        VmConfig {
            vcpus: 1,
            memory_mib: 128,
            boot,
            serial: SerialOutput::Discard,
            debug_exit: false,
            entropy: false,
            vsock: None,
            nets: Vec::new(),
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
        for (index, net) in self.nets.iter().enumerate() {
            let checked = if self.nets[..index].iter().any(|n| n.tap == net.tap) {
                Err(NetSpecError::DuplicateTap(net.tap.clone()))
            } else {
                net.validate()
            };
            checked.map_err(|source| ConfigError::Net { index, source })?;
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
    #[error("nets[{index}]")]
    Net {
        index: usize,
        #[source]
        source: NetSpecError,
    },
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

    #[test]
    fn nets_are_checked() {
        let raw = BootSource::Raw {
            code: vec![0x90],
            load_addr: 0x1000,
        };
        let net = |tap: &str, mac: Option<&str>| NetSpec {
            tap: tap.into(),
            mac: mac.map(|m| m.parse().unwrap()),
        };
        let with = |nets: Vec<NetSpec>| VmConfig {
            nets,
            ..VmConfig::new(raw.clone())
        };
        let ok = with(vec![
            net("tap0", None),
            net("tap1", Some("02:00:00:00:00:01")),
        ]);
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (net("", None), NetSpecError::Tap("".into())),
            (
                net("sixteen-bytes-xx", None),
                NetSpecError::Tap("sixteen-bytes-xx".into()),
            ),
            (net("a/b", None), NetSpecError::Tap("a/b".into())),
            (
                net("tap2", Some("01:00:5e:00:00:01")),
                NetSpecError::Mac("01:00:5e:00:00:01".parse().unwrap()),
            ),
            (
                net("tap2", Some("00:00:00:00:00:00")),
                NetSpecError::Mac(MacAddr([0; 6])),
            ),
            (net("tap0", None), NetSpecError::DuplicateTap("tap0".into())),
        ];
        for (bad, source) in cases {
            let config = with(vec![net("tap0", None), bad]);
            let err = config.validate().unwrap_err();
            assert_eq!(err, ConfigError::Net { index: 1, source });
            assert_eq!(err.to_string(), "nets[1]");
        }
        let err = net("sixteen-bytes-xx", None).validate().unwrap_err();
        assert!(
            err.to_string().starts_with("tap: \"sixteen-bytes-xx\""),
            "{err}"
        );
    }

    #[test]
    fn net_spec_serde_is_strict() {
        let spec: NetSpec =
            serde_json::from_str(r#"{"tap": "tap0", "mac": "02:00:00:00:00:01"}"#).unwrap();
        assert_eq!(spec.mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        let spec: NetSpec = serde_json::from_str(r#"{"tap": "tap0"}"#).unwrap();
        assert_eq!(spec.mac, None);
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"tap":"tap0"}"#);
        assert!(serde_json::from_str::<NetSpec>(r#"{"tap": "t", "mtu": 9000}"#).is_err());
        assert!(serde_json::from_str::<NetSpec>(r#"{"tap": "t", "mac": "zz"}"#).is_err());
    }
}

//! The VM configuration, validated before anything is built.

use std::path::PathBuf;

use cocoon_vsock::VsockConfig;

use crate::boot::BootSource;

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

/// A virtio-fs device whose file system a vhost-user backend (virtiofsd) serves on
/// `socket_path`; the guest mounts it by `tag` (`mount -t virtiofs <tag> <dir>`).
/// The backend must be listening by the time the VM is built (a few seconds of
/// grace); guest memory is then shared with it (a memfd).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFsSpec {
    /// The backend's vhost-user unix socket.
    pub socket_path: PathBuf,
    /// 1..=36 bytes of UTF-8 without NUL.
    pub tag: String,
}

impl SharedFsSpec {
    /// Checks the tag (the socket is checked when the VM is built).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |why| ConfigError::SharedFs {
            tag: self.tag.clone(),
            why,
        };
        crate::devices::virtio::fs::check_tag(&self.tag).map_err(field)?;
        if self.socket_path.as_os_str().is_empty() {
            return Err(field("socket_path is empty"));
        }
        Ok(())
    }
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
    /// Adds one virtio-fs device each (and shares guest memory with their backends).
    pub shared_fs: Vec<SharedFsSpec>,
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
            shared_fs: Vec::new(),
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
        for (i, fs) in self.shared_fs.iter().enumerate() {
            fs.validate()?;
            if self.shared_fs[..i].iter().any(|other| other.tag == fs.tag) {
                return Err(ConfigError::SharedFs {
                    tag: fs.tag.clone(),
                    why: "the tag is used twice",
                });
            }
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
    #[error("shared_fs {tag:?}: {why}")]
    SharedFs { tag: String, why: &'static str },
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
    fn shared_fs_tags_are_checked() {
        let raw = BootSource::Raw {
            code: vec![0x90],
            load_addr: 0x1000,
        };
        let fs = |tag: &str| SharedFsSpec {
            socket_path: "/run/fs.sock".into(),
            tag: tag.into(),
        };
        let mut config = VmConfig::new(raw);
        config.shared_fs = vec![fs("rootfs"), fs(&"x".repeat(36))];
        assert_eq!(config.validate(), Ok(()));
        for bad in ["", "a\0b", &"x".repeat(37)] {
            config.shared_fs = vec![fs(bad)];
            assert!(
                matches!(config.validate(), Err(ConfigError::SharedFs { ref tag, .. }) if tag == bad),
                "{bad:?}"
            );
        }
        config.shared_fs = vec![fs("rootfs"), fs("rootfs")];
        assert_eq!(
            config.validate(),
            Err(ConfigError::SharedFs {
                tag: "rootfs".into(),
                why: "the tag is used twice"
            })
        );
        config.shared_fs = vec![SharedFsSpec {
            socket_path: "".into(),
            tag: "t".into(),
        }];
        assert!(config.validate().is_err());
        let parsed: SharedFsSpec =
            serde_json::from_str(r#"{"socket_path": "/run/fs.sock", "tag": "rootfs"}"#).unwrap();
        assert_eq!(parsed, fs("rootfs"));
        assert!(serde_json::from_str::<SharedFsSpec>(
            r#"{"socket_path": "/s", "tag": "t", "cache": "auto"}"#
        )
        .is_err());
    }
}

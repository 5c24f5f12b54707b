//! The VM configuration, validated before anything is built.

use std::path::PathBuf;

use cocoon_vsock::VsockConfig;
use serde::{Deserialize, Serialize};

use crate::arch::x86_64::layout::{IRQ_MAX, VIRTIO_IRQ_BASE};
use crate::boot::BootSource;
use crate::devices::virtio::net::tap::{valid_ifname, MAX_IFNAME_LEN};
use crate::devices::virtio::net::MacAddr;

/// Most vCPUs: what the MP table holds and our guest kernel's NR_CPUS.
pub const MAX_VCPUS: u8 = 32;
/// Most virtio devices: one IOAPIC line each from `VIRTIO_IRQ_BASE` to `IRQ_MAX`.
pub const MAX_VIRTIO_DEVICES: usize = (IRQ_MAX - VIRTIO_IRQ_BASE + 1) as usize;
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

/// A virtio-blk drive: a raw disk image on the host (a regular file or a block
/// device), locked while the VM runs — exclusively, or shared when read-only — so two
/// VMs never write one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveSpec {
    pub path: PathBuf,
    /// Offers the disk read-only (`VIRTIO_BLK_F_RO`); the guest's writes fail.
    #[serde(default)]
    pub read_only: bool,
    /// The serial the guest reads (`VIRTIO_BLK_T_GET_ID`): 1 to [`DRIVE_ID_MAX`]
    /// printable ASCII characters. Unset: derived from the file's device and inode.
    #[serde(default)]
    pub id: Option<String>,
}

/// Longest drive serial (`VIRTIO_BLK_ID_BYTES`).
pub const DRIVE_ID_MAX: usize = 20;

impl DriveSpec {
    /// Checks the fields of `drives[index]`.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::DrivePath { index });
        }
        if let Some(id) = &self.id {
            let printable = id.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if id.is_empty() || id.len() > DRIVE_ID_MAX || !printable {
                return Err(ConfigError::DriveId {
                    index,
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A virtio-fs device whose file system a vhost-user backend (virtiofsd) serves on
/// `socket_path`; the guest mounts it by `tag` (`mount -t virtiofs <tag> <dir>`).
/// The backend must be listening by the time the VM is built (a few seconds of
/// grace); guest memory is then shared with it (a memfd).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFsSpec {
    /// The backend's vhost-user unix socket.
    pub socket_path: PathBuf,
    /// 1..=36 bytes of UTF-8 without NUL.
    pub tag: String,
}

impl SharedFsSpec {
    /// Checks the fields of `shared_fs[index]`: the tag, and that there is a socket
    /// path (the socket itself is checked when the VM is built).
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let field = |why| ConfigError::SharedFs {
            index,
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

/// A virtio-net device whose host side is the tap interface `tap`: opened as is if it
/// exists (a persistent tap the runtime made in the pod's network namespace), created
/// otherwise (and gone again when the VM ends).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// virtio-blk devices, in slot order after entropy and vsock.
    #[serde(default)]
    pub drives: Vec<DriveSpec>,
    /// Adds a virtio-net device for each, after the drives.
    #[serde(default)]
    pub nets: Vec<NetSpec>,
    /// Adds one virtio-fs device each, after the nets (and shares guest memory with
    /// their backends).
    #[serde(default)]
    pub shared_fs: Vec<SharedFsSpec>,
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
            drives: Vec::new(),
            shared_fs: Vec::new(),
            nets: Vec::new(),
        }
    }

    /// How many virtio-mmio slots the configuration takes.
    pub fn virtio_device_count(&self) -> usize {
        usize::from(self.entropy)
            + usize::from(self.vsock.is_some())
            + self.drives.len()
            + self.nets.len()
            + self.shared_fs.len()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::MemoryMib(self.memory_mib));
        }
        let virtio = self.virtio_device_count();
        if virtio > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(virtio));
        }
        if let BootSource::Raw { code, .. } = &self.boot {
            if code.is_empty() {
                return Err(ConfigError::EmptyCode);
            }
        }
        if let Some(vsock) = &self.vsock {
            vsock.device_config().validate()?;
        }
        for (index, drive) in self.drives.iter().enumerate() {
            drive.validate(index)?;
        }
        for (i, fs) in self.shared_fs.iter().enumerate() {
            fs.validate(i)?;
            if self.shared_fs[..i].iter().any(|other| other.tag == fs.tag) {
                return Err(ConfigError::SharedFs {
                    index: i,
                    tag: fs.tag.clone(),
                    why: "the tag is used twice",
                });
            }
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
    #[error(
        "{0} virtio devices (entropy, vsock, drives, nets, shared_fs): at most \
         {MAX_VIRTIO_DEVICES}, one interrupt line each"
    )]
    TooManyDevices(usize),
    #[error("vsock")]
    Vsock(#[from] cocoon_vsock::ConfigError),
    #[error("drives[{index}].path: empty")]
    DrivePath { index: usize },
    #[error("drives[{index}].id: {id:?} is not 1 to {DRIVE_ID_MAX} printable ASCII characters")]
    DriveId { index: usize, id: String },
    #[error("shared_fs[{index}] (tag {tag:?}): {why}")]
    SharedFs {
        index: usize,
        tag: String,
        why: &'static str,
    },
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
        let drive = |i: usize| DriveSpec {
            path: format!("/d{i}.img").into(),
            read_only: true,
            id: None,
        };
        let mut many = ok.clone();
        many.drives = (0..MAX_VIRTIO_DEVICES).map(drive).collect();
        assert_eq!(many.validate(), Ok(()));
        many.entropy = true;
        assert_eq!(
            many.validate(),
            Err(ConfigError::TooManyDevices(MAX_VIRTIO_DEVICES + 1))
        );
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
    fn drives_are_checked() {
        let raw = BootSource::Raw {
            code: vec![0x90],
            load_addr: 0x1000,
        };
        let drive = DriveSpec {
            path: "/var/lib/disk.img".into(),
            read_only: false,
            id: Some("x".repeat(DRIVE_ID_MAX)),
        };
        let mut config = VmConfig::new(raw);
        config.drives = vec![drive.clone(), drive.clone()];
        assert_eq!(config.validate(), Ok(()));
        config.drives[1].path = PathBuf::new();
        assert_eq!(config.validate(), Err(ConfigError::DrivePath { index: 1 }));
        for bad in ["", "a\0b", "tab\tbed", "\u{e9}t\u{e9}"] {
            config.drives[1] = DriveSpec {
                id: Some(bad.into()),
                ..drive.clone()
            };
            assert_eq!(
                config.validate(),
                Err(ConfigError::DriveId {
                    index: 1,
                    id: bad.into()
                })
            );
        }
        config.drives[1].id = Some("x".repeat(DRIVE_ID_MAX + 1));
        assert!(config.validate().is_err());
    }

    #[test]
    fn drive_specs_read_from_json_with_defaults() {
        let spec: DriveSpec = serde_json::from_str(r#"{"path": "/d.img"}"#).unwrap();
        assert_eq!(
            spec,
            DriveSpec {
                path: "/d.img".into(),
                read_only: false,
                id: None
            }
        );
        let unknown = serde_json::from_str::<DriveSpec>(r#"{"path": "/d", "ro": true}"#);
        assert!(unknown.is_err());
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
        config.shared_fs = vec![fs("rootfs"), fs("data"), fs("rootfs")];
        let twice = config.validate().unwrap_err();
        assert_eq!(
            twice,
            ConfigError::SharedFs {
                index: 2,
                tag: "rootfs".into(),
                why: "the tag is used twice"
            }
        );
        assert_eq!(
            twice.to_string(),
            "shared_fs[2] (tag \"rootfs\"): the tag is used twice"
        );
        config.shared_fs = vec![
            fs("a"),
            SharedFsSpec {
                socket_path: "".into(),
                tag: "t".into(),
            },
        ];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::SharedFs { index: 1, .. })
        ));
        let parsed: SharedFsSpec =
            serde_json::from_str(r#"{"socket_path": "/run/fs.sock", "tag": "rootfs"}"#).unwrap();
        assert_eq!(parsed, fs("rootfs"));
        assert!(serde_json::from_str::<SharedFsSpec>(
            r#"{"socket_path": "/s", "tag": "t", "cache": "auto"}"#
        )
        .is_err());
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

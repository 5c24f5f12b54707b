//! What a VM is made of, validated before anything starts.
//!
//! [`VmConfig`] is what callers (the runtime's VM profiles) write; [`VmConfig::validate`]
//! checks every field against the host and returns a [`ValidVmConfig`] with paths
//! resolved and acceleration decided, or a [`ConfigError`] naming the field.

use crate::accel::{self, Accel, AccelChoice, Detected};
use crate::virtiofs::{self, SharedFsConfig, VIRTIOFSD_INSTALL};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Smallest guest that boots the kernel and agent with room for containers.
pub const MIN_MEMORY_MIB: u32 = 64;
/// More vCPUs than this is a configuration mistake, not a pod.
pub const MAX_VCPUS: u32 = 64;
/// The most vCPUs cocoon-vmm builds (its MP table, our kernel's NR_CPUS).
pub const BUILTIN_MAX_VCPUS: u32 = 32;
/// Longest unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Room for the `_<port>` suffix of guest-initiated connection sockets.
const PORT_SUFFIX: usize = 11;

/// The VMM that runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Debian's qemu-system-x86_64, `-M microvm`, with our vhost-user vsock device.
    #[default]
    Qemu,
    /// Cocoon's own KVM VMM (`cocoon-vmm`), vsock device in process. Needs KVM.
    Builtin,
}

/// A VM to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Uncompressed vmlinux with a PVH entry (our kernel) or a bzImage.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Appended to the kernel command line Cocoon builds.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    #[serde(default)]
    pub accel: AccelChoice,
    /// The guest's vsock context id.
    #[serde(default = "default_guest_cid")]
    pub guest_cid: u32,
    /// A command name (looked up in PATH) or a path.
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    /// The vhost-user vsock backend (`cocoon-vsock`): a command name or a path.
    #[serde(default = "default_vsock_backend")]
    pub vsock_backend: PathBuf,
    /// The builtin VMM (`cocoon-vmm`): a command name or a path.
    #[serde(default = "default_vmm")]
    pub vmm: PathBuf,
    /// A host directory shared into the guest over virtio-fs (QEMU backend).
    #[serde(default)]
    pub shared_fs: Option<SharedFsConfig>,
    /// virtiofsd, for `shared_fs`: a command name or a path; none → PATH, then
    /// `~/.cargo/bin/virtiofsd`, `/usr/libexec/virtiofsd`, `/usr/lib/qemu/virtiofsd`.
    #[serde(default)]
    pub virtiofsd: Option<PathBuf>,
    /// Directory for the VM's sockets and logs; created by start, removed by cleanup.
    pub run_dir: PathBuf,
}

fn default_vcpus() -> u32 {
    1
}
fn default_memory_mib() -> u32 {
    256
}
fn default_guest_cid() -> u32 {
    3
}
fn default_qemu() -> PathBuf {
    "qemu-system-x86_64".into()
}
fn default_vsock_backend() -> PathBuf {
    "cocoon-vsock".into()
}
fn default_vmm() -> PathBuf {
    "cocoon-vmm".into()
}

impl VmConfig {
    /// A config with defaults for everything but the boot files and run directory.
    pub fn new(
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            backend: Backend::default(),
            vcpus: default_vcpus(),
            memory_mib: default_memory_mib(),
            kernel: kernel.into(),
            initrd: initrd.into(),
            kernel_args: Vec::new(),
            accel: AccelChoice::default(),
            guest_cid: default_guest_cid(),
            qemu: default_qemu(),
            vsock_backend: default_vsock_backend(),
            vmm: default_vmm(),
            shared_fs: None,
            virtiofsd: None,
            run_dir: run_dir.into(),
        }
    }

    /// Checks every field against this host.
    pub fn validate(&self) -> Result<ValidVmConfig, ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        let host_mib = host_memory_mib();
        if self.memory_mib < MIN_MEMORY_MIB
            || host_mib.is_some_and(|h| u64::from(self.memory_mib) > h)
        {
            return Err(ConfigError::Memory {
                mib: self.memory_mib,
                host_mib,
            });
        }
        check_readable("kernel", &self.kernel)?;
        check_readable("initrd", &self.initrd)?;
        if self.guest_cid < 3 || self.guest_cid == u32::MAX {
            return Err(ConfigError::GuestCid(self.guest_cid));
        }
        for arg in &self.kernel_args {
            if arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::KernelArg(arg.clone()));
            }
        }
        if !self.run_dir.is_absolute() {
            return Err(ConfigError::RunDir {
                path: self.run_dir.clone(),
                why: "must be absolute",
            });
        }
        let longest = self.run_dir.join(crate::vm::VSOCK_SOCKET).as_os_str().len() + PORT_SUFFIX;
        if longest > MAX_SOCKET_PATH {
            return Err(ConfigError::RunDir {
                path: self.run_dir.clone(),
                why: "too long for its unix sockets (sun_path is 108 bytes)",
            });
        }
        if let Some(fs) = &self.shared_fs {
            fs.validate()?;
        }
        let (accel, programs) = match self.backend {
            Backend::Qemu => (accel::resolve(self.accel), self.qemu_programs()?),
            Backend::Builtin => self.builtin_programs()?,
        };
        Ok(ValidVmConfig {
            accel,
            programs,
            config: self.clone(),
        })
    }

    fn qemu_programs(&self) -> Result<Programs, ConfigError> {
        let qemu =
            find_program(&self.qemu).ok_or_else(|| ConfigError::QemuMissing(self.qemu.clone()))?;
        let vsock_backend = find_program(&self.vsock_backend)
            .ok_or_else(|| ConfigError::VsockBackendMissing(self.vsock_backend.clone()))?;
        let virtiofsd = match &self.shared_fs {
            Some(_) => Some(virtiofs::find_virtiofsd(self.virtiofsd.as_deref())?),
            None => None,
        };
        Ok(Programs::Qemu {
            qemu,
            vsock_backend,
            virtiofsd,
        })
    }

    /// The builtin VMM runs on KVM or not at all.
    fn builtin_programs(&self) -> Result<(Detected, Programs), ConfigError> {
        if self.vcpus > BUILTIN_MAX_VCPUS {
            return Err(ConfigError::BuiltinVcpus(self.vcpus));
        }
        let accel = match self.accel {
            AccelChoice::Tcg => {
                return Err(ConfigError::BuiltinNeedsKvm(
                    "tcg was asked for, and only the qemu backend has it".into(),
                ))
            }
            choice => accel::resolve(choice),
        };
        if accel.accel != Accel::Kvm {
            return Err(ConfigError::BuiltinNeedsKvm(format!(
                "{}; use the qemu backend here",
                accel.reason
            )));
        }
        let vmm =
            find_program(&self.vmm).ok_or_else(|| ConfigError::VmmMissing(self.vmm.clone()))?;
        let virtiofsd = match &self.shared_fs {
            Some(_) => Some(virtiofs::find_virtiofsd(self.virtiofsd.as_deref())?),
            None => None,
        };
        Ok((accel, Programs::Builtin { vmm, virtiofsd }))
    }
}

/// The programs a validated config launches, found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Programs {
    /// QEMU, the vhost-user vsock device process and, for a shared filesystem,
    /// virtiofsd.
    Qemu {
        qemu: PathBuf,
        vsock_backend: PathBuf,
        virtiofsd: Option<PathBuf>,
    },
    /// `cocoon-vmm`, with the vsock device inside, and, for a shared filesystem,
    /// virtiofsd (cocoon-vmm is its vhost-user frontend).
    Builtin {
        vmm: PathBuf,
        virtiofsd: Option<PathBuf>,
    },
}

/// A config that passed [`VmConfig::validate`].
#[derive(Debug, Clone)]
pub struct ValidVmConfig {
    pub config: VmConfig,
    pub accel: Detected,
    pub programs: Programs,
}

/// A field that does not hold up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("vcpus: {0} is not in 1..={MAX_VCPUS}")]
    Vcpus(u32),
    #[error("memory_mib: {mib} MiB is not in {MIN_MEMORY_MIB}..={} MiB", host_mib.map_or("host memory".to_string(), |h| h.to_string()))]
    Memory { mib: u32, host_mib: Option<u64> },
    #[error("{field}: {path}: {source}")]
    File {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {path} is not a regular file")]
    NotAFile { field: &'static str, path: PathBuf },
    #[error("guest_cid: {0} is reserved (use 3..=4294967294)")]
    GuestCid(u32),
    #[error("kernel_args: {0:?} is empty or contains white space")]
    KernelArg(String),
    #[error("run_dir: {path} {why}")]
    RunDir { path: PathBuf, why: &'static str },
    #[error("qemu: {0} not found or not executable; install Debian's qemu-system-x86")]
    QemuMissing(PathBuf),
    #[error(
        "vsock_backend: {0} not found or not executable; build cocoon-vsock (cargo build --bins)"
    )]
    VsockBackendMissing(PathBuf),
    #[error("vmm: {0} not found or not executable; build cocoon-vmm (cargo build --bins)")]
    VmmMissing(PathBuf),
    #[error("accel: the builtin backend needs KVM: {0}")]
    BuiltinNeedsKvm(String),
    #[error("vcpus: {0} is more than the builtin VMM's {BUILTIN_MAX_VCPUS}")]
    BuiltinVcpus(u32),
    #[error("shared_fs.host_dir: {} {why}", path.display())]
    SharedFsDir { path: PathBuf, why: String },
    #[error("shared_fs.tag: {tag:?} {why}")]
    SharedFsTag { tag: String, why: &'static str },
    #[error("virtiofsd: {0} not found or not executable; {VIRTIOFSD_INSTALL}")]
    VirtiofsdMissing(String),
}

fn check_readable(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    let file = File::open(path).map_err(|source| ConfigError::File {
        field,
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| ConfigError::File {
        field,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// A path with a slash is taken as is; a bare name is looked up in PATH.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    let is_executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for name in ["vmlinux", "initrd"] {
                std::fs::write(dir.path().join(name), b"x").unwrap();
            }
            for name in ["qemu", "vsock", "vmm", "virtiofsd"] {
                let p = dir.path().join(name);
                std::fs::write(&p, b"#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Self { dir }
        }

        fn config(&self) -> VmConfig {
            let d = self.dir.path();
            let mut c = VmConfig::new(d.join("vmlinux"), d.join("initrd"), d.join("run"));
            c.qemu = d.join("qemu");
            c.vsock_backend = d.join("vsock");
            c.vmm = d.join("vmm");
            c.virtiofsd = Some(d.join("virtiofsd"));
            c.accel = AccelChoice::Tcg;
            c
        }

        fn shared(&self) -> VmConfig {
            let mut c = self.config();
            c.shared_fs = Some(SharedFsConfig {
                host_dir: self.dir.path().to_path_buf(),
                tag: "pod".into(),
            });
            c
        }

        fn builtin(&self) -> VmConfig {
            let mut c = self.config();
            c.backend = Backend::Builtin;
            c.accel = AccelChoice::Kvm;
            c
        }
    }

    fn err(c: &VmConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn good_config_validates() {
        let f = Files::new();
        let v = f.config().validate().unwrap();
        assert_eq!(v.accel.accel, crate::Accel::Tcg);
    }

    #[test]
    fn missing_kernel_is_named() {
        let f = Files::new();
        let mut c = f.config();
        c.kernel = f.dir.path().join("nope");
        let e = err(&c);
        assert!(e.starts_with("kernel: ") && e.contains("nope"), "{e}");
    }

    #[test]
    fn unreadable_or_directory_initrd_is_named() {
        let f = Files::new();
        let mut c = f.config();
        c.initrd = f.dir.path().to_path_buf();
        assert!(err(&c).starts_with("initrd: "), "{}", err(&c));
    }

    #[test]
    fn missing_qemu_says_how_to_install() {
        let f = Files::new();
        let mut c = f.config();
        c.qemu = "qemu-system-does-not-exist".into();
        let e = err(&c);
        assert!(
            e.contains("qemu-system-does-not-exist") && e.contains("qemu-system-x86"),
            "{e}"
        );
    }

    #[test]
    fn absurd_memory_and_vcpus_rejected() {
        let f = Files::new();
        let mut c = f.config();
        c.memory_mib = 4_000_000;
        assert!(err(&c).starts_with("memory_mib: 4000000"));
        c.memory_mib = 1;
        assert!(err(&c).starts_with("memory_mib: 1 "));
        c.memory_mib = 256;
        c.vcpus = 0;
        assert!(err(&c).starts_with("vcpus: 0"));
    }

    #[test]
    fn reserved_cid_bad_args_and_long_run_dir_rejected() {
        let f = Files::new();
        let mut c = f.config();
        c.guest_cid = 2;
        assert!(err(&c).starts_with("guest_cid: 2"));
        c.guest_cid = 3;
        c.kernel_args = vec!["a b".into()];
        assert!(err(&c).starts_with("kernel_args: "));
        c.kernel_args.clear();
        c.run_dir = PathBuf::from("/").join("x".repeat(120));
        assert!(err(&c).starts_with("run_dir: "));
        c.run_dir = "relative".into();
        assert!(err(&c).contains("must be absolute"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        use serde::de::value::{Error, MapDeserializer};
        use serde::de::IntoDeserializer;
        let pairs = [
            ("kernel", "/k"),
            ("initrd", "/i"),
            ("run_dir", "/r"),
            ("memory", "1"),
        ];
        let de: MapDeserializer<_, Error> =
            MapDeserializer::new(pairs.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let e = VmConfig::deserialize(de).unwrap_err().to_string();
        assert!(e.contains("unknown field `memory`"), "{e}");
    }

    #[test]
    fn builtin_runs_cocoon_vmm_on_kvm_only() {
        let f = Files::new();
        let v = f.builtin().validate().unwrap();
        assert_eq!(v.accel.accel, crate::Accel::Kvm);
        assert_eq!(
            v.programs,
            Programs::Builtin {
                vmm: f.dir.path().join("vmm"),
                virtiofsd: None,
            }
        );
        // No vsock device process: its binary need not exist.
        let mut c = f.builtin();
        c.vsock_backend = "/nonexistent/cocoon-vsock".into();
        assert!(c.validate().is_ok());
        c.accel = AccelChoice::Tcg;
        let e = err(&c);
        assert!(e.starts_with("accel: the builtin backend needs KVM"), "{e}");
        assert!(e.contains("qemu backend"), "{e}");
    }

    #[test]
    fn builtin_names_a_missing_vmm_and_too_many_vcpus() {
        let f = Files::new();
        let mut c = f.builtin();
        c.vmm = "cocoon-vmm-does-not-exist".into();
        let e = err(&c);
        assert!(e.starts_with("vmm: cocoon-vmm-does-not-exist"), "{e}");
        assert!(e.contains("cargo build --bins"), "{e}");
        let mut c = f.builtin();
        c.vcpus = 33;
        assert!(err(&c).starts_with("vcpus: 33"), "{}", err(&c));
    }

    #[test]
    fn shared_fs_runs_virtiofsd() {
        let f = Files::new();
        let v = f.shared().validate().unwrap();
        let Programs::Qemu { virtiofsd, .. } = v.programs else {
            panic!("qemu programs")
        };
        assert_eq!(virtiofsd, Some(f.dir.path().join("virtiofsd")));
        // Without a shared fs virtiofsd is neither needed nor looked for.
        let mut c = f.config();
        c.virtiofsd = Some("/nonexistent/virtiofsd".into());
        let Programs::Qemu { virtiofsd, .. } = c.validate().unwrap().programs else {
            panic!("qemu programs")
        };
        assert_eq!(virtiofsd, None);
    }

    #[test]
    fn each_bad_shared_fs_field_is_named() {
        let f = Files::new();
        let mut c = f.shared();
        c.shared_fs.as_mut().unwrap().host_dir = f.dir.path().join("nope");
        assert!(err(&c).starts_with("shared_fs.host_dir: "), "{}", err(&c));
        c.shared_fs.as_mut().unwrap().host_dir = "relative".into();
        assert!(err(&c).contains("must be absolute"), "{}", err(&c));
        c.shared_fs.as_mut().unwrap().host_dir = f.dir.path().join("vmlinux");
        assert!(err(&c).ends_with("is not a directory"), "{}", err(&c));
        let mut c = f.shared();
        c.shared_fs.as_mut().unwrap().tag = String::new();
        assert!(err(&c).starts_with("shared_fs.tag: "), "{}", err(&c));
        c.shared_fs.as_mut().unwrap().tag = "x".repeat(37);
        assert!(err(&c).starts_with("shared_fs.tag: "), "{}", err(&c));
        c.shared_fs.as_mut().unwrap().tag = "a b".into();
        assert!(err(&c).starts_with("shared_fs.tag: "), "{}", err(&c));
        let mut c = f.shared();
        c.virtiofsd = Some("virtiofsd-does-not-exist".into());
        let e = err(&c);
        assert!(e.starts_with("virtiofsd: virtiofsd-does-not-exist"), "{e}");
        assert!(e.contains("cargo install virtiofsd"), "{e}");
    }

    #[test]
    fn builtin_serves_a_shared_fs_through_virtiofsd() {
        let f = Files::new();
        let mut c = f.shared();
        c.backend = Backend::Builtin;
        c.accel = AccelChoice::Kvm;
        let v = c.validate().unwrap();
        assert_eq!(
            v.programs,
            Programs::Builtin {
                vmm: f.dir.path().join("vmm"),
                virtiofsd: Some(f.dir.path().join("virtiofsd")),
            }
        );
        c.virtiofsd = Some("virtiofsd-does-not-exist".into());
        assert!(err(&c).starts_with("virtiofsd: virtiofsd-does-not-exist"));
    }

    #[test]
    fn unknown_shared_fs_fields_are_refused() {
        use serde::de::value::{Error, MapDeserializer};
        use serde::de::IntoDeserializer;
        let pairs = [("host_dir", "/srv"), ("tag", "t"), ("readonly", "true")];
        let de: MapDeserializer<_, Error> =
            MapDeserializer::new(pairs.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let e = SharedFsConfig::deserialize(de).unwrap_err().to_string();
        assert!(e.contains("unknown field `readonly`"), "{e}");
    }

    #[test]
    fn backend_names_parse() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let parse = |s: &'static str| {
            let de: StrDeserializer<'_, Error> = s.into_deserializer();
            Backend::deserialize(de)
        };
        assert_eq!(parse("builtin").unwrap(), Backend::Builtin);
        assert_eq!(parse("qemu").unwrap(), Backend::Qemu);
        assert!(parse("firecracker").is_err());
    }

    #[test]
    fn bare_names_are_found_in_path() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/nonexistent/sh")).is_none());
    }
}

//! cocoond's configuration file (TOML). Every field has a default; [`DaemonConfig::load`]
//! parses and validates it at start, and every error names the field.
//!
//! ```toml
//! socket = "/run/cocoon/cocoon.sock"   # the CRI socket, mode 0660
//! socket_group = "kube"                # optional group owning the socket
//! state_dir = "/run/cocoon"            # VM run dirs and pod shared dirs (volatile)
//! root_dir = "/var/lib/cocoon"         # image store and pod records (persistent)
//! log_level = "info"                   # a tracing filter
//!
//! [vm]                                 # the default VM profile
//! vcpus = 1
//! memory_mib = 256
//! backend = "qemu"                     # or "builtin" (needs hardware KVM)
//! accel = "auto"                       # "kvm", "tcg"
//!
//! [runtime_handlers.big]               # RuntimeClass handler → profile; unset fields
//! memory_mib = 2048                    # come from [vm]
//!
//! [pod]
//! memory_overhead_mib = 128            # added to the pod's memory limit to size the VM
//!
//! [registries.hosts."docker.io"]       # containerd hosts.toml model
//! mirrors = ["http://127.0.0.1:5000"]
//! ```

use crate::guest_image::{self, GuestImage};
use cocoon_hypervisor::config::ValidVmConfig;
use cocoon_hypervisor::{AccelChoice, Backend, VmConfig};
use cocoon_image::RegistriesConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/cocoon/cocoond.toml";
pub const DEFAULT_SOCKET: &str = "/run/cocoon/cocoon.sock";
/// The name of the runtime handler that selects the default profile.
pub const DEFAULT_HANDLER: &str = "cocoon";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field {field}: {message}")]
    Field { field: String, message: String },
}

fn field(field: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub state_dir: PathBuf,
    pub root_dir: PathBuf,
    pub log_level: String,
    pub vm: VmProfile,
    pub runtime_handlers: BTreeMap<String, VmProfile>,
    pub pod: PodSettings,
    pub registries: RegistriesConfig,
    /// An OCI image layout imported at start as [`TEST_IMAGE`] when that image is not in
    /// the store; empty → the one beside the guest image, if any.
    pub test_image_layout: Option<PathBuf>,
}

/// The built-in test image (busybox), imported from the guest image build.
pub const TEST_IMAGE: &str = "localhost/cocoon/test:latest";

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            state_dir: "/run/cocoon".into(),
            root_dir: "/var/lib/cocoon".into(),
            log_level: "info".into(),
            vm: VmProfile::default(),
            runtime_handlers: BTreeMap::new(),
            pod: PodSettings::default(),
            registries: RegistriesConfig::default(),
            test_image_layout: None,
        }
    }
}

/// How pod VMs are made. In `[runtime_handlers.<name>]` every field is optional and
/// falls back to `[vm]`; in `[vm]` an unset field takes Cocoon's default (kernel and
/// initrd: the located guest image).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmProfile {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub kernel_args: Option<Vec<String>>,
    pub backend: Option<Backend>,
    pub accel: Option<AccelChoice>,
    pub qemu: Option<PathBuf>,
    pub vsock_backend: Option<PathBuf>,
    pub vmm: Option<PathBuf>,
    pub virtiofsd: Option<PathBuf>,
}

impl VmProfile {
    /// `self` with unset fields taken from `base`.
    fn over(&self, base: &VmProfile) -> VmProfile {
        VmProfile {
            vcpus: self.vcpus.or(base.vcpus),
            memory_mib: self.memory_mib.or(base.memory_mib),
            kernel: self.kernel.clone().or_else(|| base.kernel.clone()),
            initrd: self.initrd.clone().or_else(|| base.initrd.clone()),
            kernel_args: self
                .kernel_args
                .clone()
                .or_else(|| base.kernel_args.clone()),
            backend: self.backend.or(base.backend),
            accel: self.accel.or(base.accel),
            qemu: self.qemu.clone().or_else(|| base.qemu.clone()),
            vsock_backend: self
                .vsock_backend
                .clone()
                .or_else(|| base.vsock_backend.clone()),
            vmm: self.vmm.clone().or_else(|| base.vmm.clone()),
            virtiofsd: self.virtiofsd.clone().or_else(|| base.virtiofsd.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodSettings {
    /// Guest memory beyond the pod's limit: kernel, agent, page cache, pause process.
    pub memory_overhead_mib: u32,
    /// How long a VM may take from launch to a serving agent.
    pub ready_timeout_s: u64,
    /// How long StopPodSandbox waits for the guest to power off before killing it.
    pub shutdown_grace_s: u64,
}

impl Default for PodSettings {
    fn default() -> Self {
        PodSettings {
            memory_overhead_mib: 128,
            ready_timeout_s: 120,
            shutdown_grace_s: 5,
        }
    }
}

impl PodSettings {
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_s)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }
}

/// A VM profile resolved against the host: what RunPodSandbox sizes and starts.
#[derive(Debug, Clone)]
pub struct ResolvedProfile {
    /// A template: `run_dir`, `memory_mib` and `vcpus` are set per pod.
    pub template: VmConfig,
}

impl ResolvedProfile {
    /// The profile's VM for one pod, validated.
    pub fn vm_config(
        &self,
        run_dir: &Path,
        vcpus: u32,
        memory_mib: u32,
    ) -> Result<ValidVmConfig, cocoon_hypervisor::ConfigError> {
        let mut c = self.template.clone();
        c.run_dir = run_dir.to_path_buf();
        c.vcpus = vcpus;
        c.memory_mib = memory_mib;
        c.validate()
    }
}

/// The validated configuration: profiles resolved, paths absolute.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: DaemonConfig,
    pub default_profile: ResolvedProfile,
    pub handlers: BTreeMap<String, ResolvedProfile>,
    pub test_image_layout: Option<PathBuf>,
}

impl Validated {
    /// The profile of a RuntimeClass handler; empty and [`DEFAULT_HANDLER`] name the
    /// default.
    pub fn profile(&self, handler: &str) -> Option<&ResolvedProfile> {
        if handler.is_empty() || handler == DEFAULT_HANDLER {
            return Some(&self.default_profile);
        }
        self.handlers.get(handler)
    }

    pub fn handler_names(&self) -> Vec<String> {
        let mut names = vec![DEFAULT_HANDLER.to_string()];
        names.extend(self.handlers.keys().cloned());
        names
    }
}

impl DaemonConfig {
    /// Reads `path`; a missing file at the default path means all defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<DaemonConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(DaemonConfig::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<DaemonConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Checks every field; resolves profiles (a VM config per profile is validated with a
    /// placeholder run dir, so a missing kernel or QEMU is reported now, not at the first
    /// pod).
    pub fn validate(self) -> Result<Validated, ConfigError> {
        for (name, p) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("root_dir", &self.root_dir),
        ] {
            if !p.is_absolute() {
                return Err(field(name, format!("{} is not absolute", p.display())));
            }
        }
        if self.socket.as_os_str().len() > 100 {
            return Err(field("socket", "longer than a unix socket path may be"));
        }
        if self.state_dir.as_os_str().len() > 40 {
            return Err(field(
                "state_dir",
                "longer than 40 bytes: VM sockets under it would exceed the unix socket path limit",
            ));
        }
        if let Some(g) = &self.socket_group {
            if nix::unistd::Group::from_name(g).ok().flatten().is_none() {
                return Err(field("socket_group", format!("no group named {g:?}")));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(field(
                "log_level",
                format!("{:?} is not a log filter", self.log_level),
            ));
        }
        if self.pod.ready_timeout_s == 0 {
            return Err(field("pod.ready_timeout_s", "must be at least 1"));
        }
        self.registries
            .validate()
            .map_err(|m| field("registries", m))?;
        let default_profile = resolve(&self.vm, &self.vm, "vm", &self.state_dir)?;
        let mut handlers = BTreeMap::new();
        for (name, p) in &self.runtime_handlers {
            let label = format!("runtime_handlers.{name}");
            if name.is_empty() || name == DEFAULT_HANDLER {
                return Err(field(label, "this handler name is reserved"));
            }
            handlers.insert(name.clone(), resolve(p, &self.vm, &label, &self.state_dir)?);
        }
        let test_image_layout = match &self.test_image_layout {
            Some(p) if !p.join("index.json").is_file() => {
                return Err(field(
                    "test_image_layout",
                    format!("{} is not an OCI image layout", p.display()),
                ))
            }
            Some(p) => Some(p.clone()),
            None => GuestImage::locate()
                .ok()
                .and_then(|g| g.kernel.parent().map(|d| d.join("test-image")))
                .filter(|d| d.join("index.json").is_file()),
        };
        Ok(Validated {
            raw: self,
            default_profile,
            handlers,
            test_image_layout,
        })
    }
}

fn resolve(
    p: &VmProfile,
    base: &VmProfile,
    label: &str,
    state_dir: &Path,
) -> Result<ResolvedProfile, ConfigError> {
    let p = p.over(base);
    let located = || GuestImage::locate().map_err(|e| field(format!("{label}.kernel"), e));
    let (kernel, initrd) = match (p.kernel.clone(), p.initrd.clone()) {
        (Some(k), Some(i)) => (k, i),
        (k, i) => {
            let g = located()?;
            (k.unwrap_or(g.kernel), i.unwrap_or(g.initrd))
        }
    };
    let mut c = VmConfig::new(kernel, initrd, state_dir.join("vm").join("x".repeat(12)));
    if let Some(v) = p.vcpus {
        c.vcpus = v;
    }
    if let Some(m) = p.memory_mib {
        c.memory_mib = m;
    }
    if let Some(a) = p.kernel_args {
        c.kernel_args = a;
    }
    if let Some(b) = p.backend {
        c.backend = b;
    }
    if let Some(a) = p.accel {
        c.accel = a;
    }
    if let Some(q) = p.qemu {
        c.qemu = q;
    }
    c.vsock_backend = p.vsock_backend.unwrap_or_else(guest_image::vsock_backend);
    if let Some(v) = p.vmm {
        c.vmm = v;
    }
    if let Some(v) = p.virtiofsd {
        c.virtiofsd = Some(v);
    }
    // Every pod VM has the shared filesystem; validate with one so a missing virtiofsd
    // is reported at start.
    c.shared_fs = Some(cocoon_hypervisor::SharedFsConfig {
        host_dir: std::env::temp_dir(),
        tag: crate::shared_fs::TAG.into(),
    });
    c.validate().map_err(|e| field(label, e.to_string()))?;
    Ok(ResolvedProfile { template: c })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(c.pod.memory_overhead_mib, 128);
        assert!(c.runtime_handlers.is_empty());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse("[vm]\nmemroy_mib = 3\n").unwrap_err().to_string();
        assert!(e.contains("memroy_mib"), "{e}");
        let e = parse("sockett = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("sockett"), "{e}");
    }

    #[test]
    fn handler_profiles_fall_back_to_vm() {
        let c =
            parse("[vm]\nvcpus = 2\nmemory_mib = 512\n[runtime_handlers.big]\nmemory_mib = 4096\n")
                .unwrap();
        let big = c.runtime_handlers["big"].over(&c.vm);
        assert_eq!(big.vcpus, Some(2));
        assert_eq!(big.memory_mib, Some(4096));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = parse("").unwrap();
        c.state_dir = "relative".into();
        let e = c.clone().validate().unwrap_err().to_string();
        assert!(e.contains("state_dir"), "{e}");
        c.state_dir = "/run/cocoon".into();
        c.log_level = "[[[".into();
        let e = c.clone().validate().unwrap_err().to_string();
        assert!(e.contains("log_level"), "{e}");
        c.log_level = "info".into();
        c.socket_group = Some("no-such-group-cocoon".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("socket_group"), "{e}");
    }

    #[test]
    fn bad_profile_is_named() {
        let mut c = parse("[runtime_handlers.tiny]\nmemory_mib = 1\n").unwrap();
        c.vm.kernel = Some("/bin/true".into());
        c.vm.initrd = Some("/bin/true".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("runtime_handlers.tiny"), "{e}");
        assert!(e.contains("memory"), "{e}");
    }
}

//! QEMU's command line, built from a validated config (pure: no I/O but reading the host
//! TSC frequency).

use crate::accel::Accel;
use crate::config::ValidVmConfig;
use crate::guest_cmdline::kernel_cmdline;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Files the QEMU process is pointed at.
#[derive(Debug, Clone)]
pub struct QemuPaths {
    pub console_log: PathBuf,
    pub vhost_user_socket: PathBuf,
    /// virtiofsd's socket, used when the config has a shared filesystem.
    pub virtiofs_socket: PathBuf,
}

/// QEMU's arguments for `cfg`.
pub fn qemu_args(cfg: &ValidVmConfig, paths: &QemuPaths, tsc_khz: Option<u64>) -> Vec<OsString> {
    let c = &cfg.config;
    let accel = cfg.accel.accel;
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |s: String| args.push(s.into());
    push("-M".into());
    push("microvm,acpi=off,memory-backend=mem".into());
    push("-object".into());
    push(format!(
        "memory-backend-memfd,id=mem,size={}M,share=on",
        c.memory_mib
    ));
    push("-m".into());
    push(format!("{}M", c.memory_mib));
    push("-smp".into());
    push(c.vcpus.to_string());
    match accel {
        Accel::Kvm => {
            push("-accel".into());
            push("kvm".into());
            push("-cpu".into());
            push("host".into());
        }
        Accel::Tcg => {
            push("-accel".into());
            push("tcg,thread=multi".into());
            push("-cpu".into());
            push("max".into());
        }
    }
    for fixed in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ] {
        push(fixed.into());
    }
    push("-serial".into());
    push(format!("file:{}", opt_path(&paths.console_log)));
    push("-chardev".into());
    push(format!(
        "socket,id=vsock,path={}",
        opt_path(&paths.vhost_user_socket)
    ));
    push("-device".into());
    push("vhost-user-vsock-device,chardev=vsock".into());
    if let Some(fs) = &c.shared_fs {
        push("-chardev".into());
        push(format!(
            "socket,id=fs0,path={}",
            opt_path(&paths.virtiofs_socket)
        ));
        push("-device".into());
        push(format!(
            "vhost-user-fs-device,chardev=fs0,tag={}",
            fs.tag.replace(',', ",,")
        ));
    }
    push("-kernel".into());
    push(opt_path(&c.kernel));
    push("-initrd".into());
    push(opt_path(&c.initrd));
    push("-append".into());
    push(kernel_cmdline(accel, tsc_khz, &c.kernel_args));
    args
}

/// A path inside a QEMU option: commas are doubled, QEMU's escape.
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The host TSC frequency in kHz, for the guest under TCG: the kernel's own figure when
/// it exports one, else the CPU's nominal MHz.
pub fn host_tsc_khz() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz") {
        if let Ok(khz) = s.trim().parse() {
            return Some(khz);
        }
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpu_mhz_khz(&cpuinfo)
}

fn cpu_mhz_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Detected;
    use crate::config::{Programs, VmConfig};

    fn valid(accel: Accel) -> ValidVmConfig {
        let mut config = VmConfig::new("/k/vm,linux", "/k/initrd", "/run/x");
        config.memory_mib = 512;
        config.vcpus = 2;
        config.kernel_args = vec!["loglevel=7".into()];
        ValidVmConfig {
            config,
            accel: Detected {
                accel,
                reason: String::new(),
            },
            programs: Programs::Qemu {
                qemu: "/usr/bin/qemu-system-x86_64".into(),
                vsock_backend: "/usr/bin/cocoon-vsock".into(),
                virtiofsd: None,
            },
        }
    }

    fn args(accel: Accel) -> Vec<String> {
        args_of(&valid(accel))
    }

    fn args_of(cfg: &ValidVmConfig) -> Vec<String> {
        let paths = QemuPaths {
            console_log: "/run/x/console.log".into(),
            vhost_user_socket: "/run/x/vhost-user.sock".into(),
            virtiofs_socket: "/run/x/virtiofs.sock".into(),
        };
        qemu_args(cfg, &paths, Some(2_000_000))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn all_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn shared_fs_is_a_vhost_user_fs_device() {
        let mut cfg = valid(Accel::Tcg);
        assert!(!args_of(&cfg).iter().any(|a| a.contains("vhost-user-fs")));
        cfg.config.shared_fs = Some(crate::virtiofs::SharedFsConfig {
            host_dir: "/srv/pod".into(),
            tag: "pod,1".into(),
        });
        let a = args_of(&cfg);
        assert_eq!(
            all_after(&a, "-chardev"),
            [
                "socket,id=vsock,path=/run/x/vhost-user.sock",
                "socket,id=fs0,path=/run/x/virtiofs.sock"
            ]
        );
        assert_eq!(
            all_after(&a, "-device"),
            [
                "vhost-user-vsock-device,chardev=vsock",
                "vhost-user-fs-device,chardev=fs0,tag=pod,,1"
            ]
        );
    }

    fn after<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args.iter().position(|a| a == flag).unwrap();
        &args[i + 1]
    }

    #[test]
    fn tcg_microvm_with_shared_memory_and_vsock() {
        let a = args(Accel::Tcg);
        assert_eq!(after(&a, "-M"), "microvm,acpi=off,memory-backend=mem");
        assert_eq!(
            after(&a, "-object"),
            "memory-backend-memfd,id=mem,size=512M,share=on"
        );
        assert_eq!(after(&a, "-accel"), "tcg,thread=multi");
        assert_eq!(after(&a, "-smp"), "2");
        assert_eq!(
            after(&a, "-device"),
            "vhost-user-vsock-device,chardev=vsock"
        );
        assert_eq!(
            after(&a, "-chardev"),
            "socket,id=vsock,path=/run/x/vhost-user.sock"
        );
        assert_eq!(after(&a, "-kernel"), "/k/vm,,linux");
        assert!(a.contains(&"-no-reboot".to_string()));
        let append = after(&a, "-append");
        assert!(append.starts_with("console=ttyS0 reboot=t panic=-1"));
        assert!(append.contains("tsc_early_khz=2000000 tsc=reliable"));
        assert!(append.ends_with("loglevel=7"));
    }

    #[test]
    fn kvm_uses_host_cpu_and_no_tsc_workaround() {
        let a = args(Accel::Kvm);
        assert_eq!(after(&a, "-accel"), "kvm");
        assert_eq!(after(&a, "-cpu"), "host");
        assert!(!after(&a, "-append").contains("tsc"));
    }

    #[test]
    fn cpu_mhz_to_khz() {
        assert_eq!(cpu_mhz_khz("cpu MHz\t\t: 2000.000\n"), Some(2_000_000));
        assert_eq!(cpu_mhz_khz("cpu MHz : 2394.454\n"), Some(2_394_454));
        assert_eq!(cpu_mhz_khz("nothing\n"), None);
    }
}

//! The builtin backend: `cocoon-vmm`, Cocoon's own KVM VMM — one process per VM with
//! the vsock device inside it (no vhost-user, no second process, private guest RAM).

use crate::accel::Accel;
use crate::config::ValidVmConfig;
use crate::guest_cmdline::kernel_cmdline;
use std::ffi::OsString;
use std::path::PathBuf;

/// What `cocoon-vmm` exits with when SIGTERM, SIGINT or SIGHUP ended the VM.
pub const EXIT_SIGNALLED: i32 = 3;
/// What `cocoon-vmm` exits with when a vCPU crashed.
pub const EXIT_CRASHED: i32 = 2;

/// Files the VMM process is pointed at.
#[derive(Debug, Clone)]
pub struct BuiltinPaths {
    pub console_log: PathBuf,
    pub vsock_socket: PathBuf,
    /// Where cocoon-vmm keeps its metrics (boot time, exits, device counters) as JSON.
    pub metrics: PathBuf,
}

/// `cocoon-vmm`'s arguments for `cfg`. It appends the `virtio_mmio.device=` entries
/// to the kernel command line itself.
pub fn vmm_args(cfg: &ValidVmConfig, paths: &BuiltinPaths) -> Vec<OsString> {
    let c = &cfg.config;
    let mut args: Vec<OsString> = Vec::new();
    let mut pair = |flag: &str, value: OsString| {
        args.push(flag.into());
        args.push(value);
    };
    pair("--kernel", c.kernel.clone().into());
    pair("--initrd", c.initrd.clone().into());
    pair(
        "--cmdline",
        kernel_cmdline(Accel::Kvm, None, &c.kernel_args).into(),
    );
    pair("--memory-mib", c.memory_mib.to_string().into());
    pair("--vcpus", c.vcpus.to_string().into());
    pair("--serial-log", paths.console_log.clone().into());
    pair("--vsock-uds", paths.vsock_socket.clone().into());
    pair("--guest-cid", c.guest_cid.to_string().into());
    pair("--metrics", paths.metrics.clone().into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Detected;
    use crate::config::{Programs, VmConfig};

    #[test]
    fn every_setting_reaches_the_vmm() {
        let mut config = VmConfig::new("/k/vmlinux", "/k/initrd, spaced", "/run/x");
        config.memory_mib = 512;
        config.vcpus = 2;
        config.guest_cid = 7;
        config.kernel_args = vec!["loglevel=7".into()];
        let cfg = ValidVmConfig {
            config,
            accel: Detected {
                accel: Accel::Kvm,
                reason: String::new(),
            },
            programs: Programs::Builtin {
                vmm: "/usr/bin/cocoon-vmm".into(),
            },
        };
        let paths = BuiltinPaths {
            console_log: "/run/x/console.log".into(),
            vsock_socket: "/run/x/vsock.sock".into(),
            metrics: "/run/x/metrics.json".into(),
        };
        let args: Vec<String> = vmm_args(&cfg, &paths)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--kernel",
                "/k/vmlinux",
                "--initrd",
                "/k/initrd, spaced",
                "--cmdline",
                "console=ttyS0 reboot=t panic=-1 quiet loglevel=7",
                "--memory-mib",
                "512",
                "--vcpus",
                "2",
                "--serial-log",
                "/run/x/console.log",
                "--vsock-uds",
                "/run/x/vsock.sock",
                "--guest-cid",
                "7",
                "--metrics",
                "/run/x/metrics.json",
            ]
        );
    }
}

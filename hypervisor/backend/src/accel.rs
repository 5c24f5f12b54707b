//! Which acceleration a VM gets: KVM only where KVM can boot Linux.
//!
//! A nested paravirtual KVM (PVM, `/sys/module/kvm_pvm`) runs tiny guests but not a
//! Linux kernel, and a host without VMX/SVM in its CPU flags has no hardware
//! virtualization to offer; both fall back to QEMU's TCG.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// The acceleration a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The outcome of detection, with the reason for logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detected {
    pub accel: Accel,
    pub reason: String,
}

/// Facts detection decides from; read from the host by [`HostFacts::probe`].
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub kvm_device_usable: bool,
    pub kvm_is_pvm: bool,
    pub cpu_has_vmx_or_svm: bool,
}

impl HostFacts {
    pub fn probe() -> Self {
        let kvm_device_usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let kvm_is_pvm = Path::new("/sys/module/kvm_pvm").exists();
        let cpu_has_vmx_or_svm = std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| cpuinfo_has_virt(&s))
            .unwrap_or(false);
        Self {
            kvm_device_usable,
            kvm_is_pvm,
            cpu_has_vmx_or_svm,
        }
    }
}

fn cpuinfo_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Decides between KVM and TCG for `Auto`.
pub fn detect(facts: &HostFacts) -> Detected {
    let (accel, reason) = if !facts.kvm_device_usable {
        (Accel::Tcg, "/dev/kvm is missing or not accessible")
    } else if facts.kvm_is_pvm {
        (
            Accel::Tcg,
            "/dev/kvm is a nested paravirtual KVM (kvm_pvm), which cannot boot Linux",
        )
    } else if !facts.cpu_has_vmx_or_svm {
        (Accel::Tcg, "the CPU shows no vmx/svm flag")
    } else {
        (Accel::Kvm, "hardware KVM is available")
    };
    Detected {
        accel,
        reason: reason.to_string(),
    }
}

/// Whether this host's KVM boots Linux guests (what the builtin backend needs);
/// otherwise why not.
pub fn hardware_kvm() -> Result<(), String> {
    let detected = detect(&HostFacts::probe());
    match detected.accel {
        Accel::Kvm => Ok(()),
        Accel::Tcg => Err(detected.reason),
    }
}

/// Resolves a configured choice on this host.
pub fn resolve(choice: AccelChoice) -> Detected {
    match choice {
        AccelChoice::Kvm => Detected {
            accel: Accel::Kvm,
            reason: "forced by configuration".into(),
        },
        AccelChoice::Tcg => Detected {
            accel: Accel::Tcg,
            reason: "forced by configuration".into(),
        },
        AccelChoice::Auto => detect(&HostFacts::probe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dev: bool, pvm: bool, virt: bool) -> HostFacts {
        HostFacts {
            kvm_device_usable: dev,
            kvm_is_pvm: pvm,
            cpu_has_vmx_or_svm: virt,
        }
    }

    #[test]
    fn kvm_only_with_device_hardware_and_no_pvm() {
        assert_eq!(detect(&facts(true, false, true)).accel, Accel::Kvm);
        assert_eq!(detect(&facts(false, false, true)).accel, Accel::Tcg);
        let pvm = detect(&facts(true, true, true));
        assert_eq!(pvm.accel, Accel::Tcg);
        assert!(pvm.reason.contains("kvm_pvm"));
        assert_eq!(detect(&facts(true, false, false)).accel, Accel::Tcg);
    }

    #[test]
    fn cpu_flags_parsed() {
        assert!(cpuinfo_has_virt("flags\t\t: fpu vme vmx sse\n"));
        assert!(cpuinfo_has_virt("flags : svm\n"));
        assert!(!cpuinfo_has_virt("flags\t\t: fpu hypervisor vmxnope\n"));
    }
}

//! What this host's KVM can do: tiny guests run on any usable `/dev/kvm`, but a
//! Linux guest boots only on hardware KVM. A nested paravirtual KVM (PVM,
//! `/sys/module/kvm_pvm`) fails on instructions its emulator lacks.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;

/// Facts detection decides from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// `/dev/kvm` opened read-write, or why not.
    pub kvm_device: Result<(), String>,
    /// `/sys/module/kvm_pvm` exists.
    pub pvm: bool,
    /// The CPU flags list `vmx` or `svm`.
    pub virt_flags: bool,
}

impl HostFacts {
    /// Reads the facts from this host.
    pub fn probe() -> HostFacts {
        let kvm_device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| e.to_string());
        let virt_flags = std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| cpuinfo_has_virt(&s))
            .unwrap_or(false);
        HostFacts {
            kvm_device,
            pvm: Path::new("/sys/module/kvm_pvm").exists(),
            virt_flags,
        }
    }
}

/// Why hardware KVM is not available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoHardwareKvm {
    /// `/dev/kvm` cannot be opened.
    NoDevice(String),
    /// KVM is the paravirtual PVM module.
    Pvm,
    /// The CPU advertises neither VMX nor SVM.
    NoVirtFlags,
}

impl fmt::Display for NoHardwareKvm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoHardwareKvm::NoDevice(e) => write!(f, "/dev/kvm is not usable: {e}"),
            NoHardwareKvm::Pvm => f.write_str(
                "/dev/kvm is a nested paravirtual KVM (kvm_pvm): a Linux guest does not boot on it",
            ),
            NoHardwareKvm::NoVirtFlags => f.write_str("the CPU has neither vmx nor svm"),
        }
    }
}

/// Decides from `facts`.
pub fn classify(facts: &HostFacts) -> Result<(), NoHardwareKvm> {
    if let Err(e) = &facts.kvm_device {
        return Err(NoHardwareKvm::NoDevice(e.clone()));
    }
    if facts.pvm {
        return Err(NoHardwareKvm::Pvm);
    }
    if !facts.virt_flags {
        return Err(NoHardwareKvm::NoVirtFlags);
    }
    Ok(())
}

/// Whether a Linux guest can boot here: `/dev/kvm` usable, not PVM, VMX or SVM present.
pub fn hardware_kvm() -> Result<(), NoHardwareKvm> {
    classify(&HostFacts::probe())
}

/// Whether `/dev/kvm` can run (tiny) guests at all.
pub fn kvm_usable() -> Result<(), NoHardwareKvm> {
    HostFacts::probe()
        .kvm_device
        .map_err(NoHardwareKvm::NoDevice)
}

fn cpuinfo_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dev: bool, pvm: bool, virt: bool) -> HostFacts {
        HostFacts {
            kvm_device: if dev { Ok(()) } else { Err("ENOENT".into()) },
            pvm,
            virt_flags: virt,
        }
    }

    #[test]
    fn hardware_needs_device_no_pvm_and_flags() {
        assert_eq!(classify(&facts(true, false, true)), Ok(()));
        assert!(matches!(
            classify(&facts(false, false, true)),
            Err(NoHardwareKvm::NoDevice(_))
        ));
        assert_eq!(classify(&facts(true, true, true)), Err(NoHardwareKvm::Pvm));
        assert_eq!(
            classify(&facts(true, false, false)),
            Err(NoHardwareKvm::NoVirtFlags)
        );
    }

    #[test]
    fn cpuinfo_flags_are_matched_as_words() {
        assert!(cpuinfo_has_virt("processor\t: 0\nflags\t\t: fpu vmx sse\n"));
        assert!(cpuinfo_has_virt("flags\t\t: svm\n"));
        assert!(!cpuinfo_has_virt("flags\t\t: fpu vmxnot\nvmx\n"));
    }
}

//! How big a pod's VM is: the profile's size, grown to hold the pod's limits.
//!
//! memory = max(profile memory, pod memory limit + pod overhead + `memory_overhead_mib`)
//! vcpus  = max(profile vcpus, ⌈(pod cpu quota + overhead quota) / period⌉), at most the
//!          host's CPUs.
//!
//! The pod limits come from `PodSandboxConfig.linux.resources` (kubelet sends the sum of
//! its containers' limits there) and `linux.overhead` (the RuntimeClass overhead). A pod
//! without limits gets the profile's size. The guest kernel, agent and page cache live
//! in the overhead, so the memory a pod was promised is there for its containers.

use super::error::{invalid, Result};
use k8s_cri::v1::{LinuxContainerResources, PodSandboxConfig};

const MIB: i64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub vcpus: u32,
    pub memory_mib: u32,
}

pub fn vm_size(
    pod: &PodSandboxConfig,
    profile: VmSize,
    overhead_mib: u32,
    host_cpus: u32,
) -> Result<VmSize> {
    let linux = pod.linux.as_ref();
    let res = linux.and_then(|l| l.resources.as_ref());
    let over = linux.and_then(|l| l.overhead.as_ref());
    let mem = |r: Option<&LinuxContainerResources>, f: &str| -> Result<i64> {
        let v = r.map(|r| r.memory_limit_in_bytes).unwrap_or(0);
        if v < 0 {
            return Err(invalid(
                format!("config.linux.{f}.memory_limit_in_bytes"),
                format!("{v} is negative"),
            ));
        }
        Ok(v)
    };
    let limit = mem(res, "resources")?;
    let mut memory_mib = profile.memory_mib;
    if limit > 0 {
        let want = limit
            .saturating_add(mem(over, "overhead")?)
            .saturating_add(MIB - 1)
            / MIB
            + i64::from(overhead_mib);
        let want = u32::try_from(want).map_err(|_| {
            invalid(
                "config.linux.resources.memory_limit_in_bytes",
                format!("{limit} is more than a VM can have"),
            )
        })?;
        memory_mib = memory_mib.max(want);
    }
    let cpus = |r: Option<&LinuxContainerResources>| {
        r.filter(|r| r.cpu_quota > 0 && r.cpu_period > 0)
            .map(|r| r.cpu_quota as f64 / r.cpu_period as f64)
            .unwrap_or(0.0)
    };
    let want_cpus = (cpus(res) + cpus(over)).ceil() as u32;
    let vcpus = profile.vcpus.max(want_cpus.min(host_cpus.max(1)));
    Ok(VmSize { vcpus, memory_mib })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::LinuxPodSandboxConfig;

    fn pod(mem: i64, quota: i64, over_mem: i64) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: mem,
                    cpu_quota: quota,
                    cpu_period: 100_000,
                    ..Default::default()
                }),
                overhead: Some(LinuxContainerResources {
                    memory_limit_in_bytes: over_mem,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const P: VmSize = VmSize {
        vcpus: 1,
        memory_mib: 256,
    };

    #[test]
    fn no_limits_keep_the_profile() {
        assert_eq!(vm_size(&PodSandboxConfig::default(), P, 128, 8).unwrap(), P);
    }

    #[test]
    fn limits_grow_the_vm() {
        let s = vm_size(&pod(1024 * MIB, 250_000, 64 * MIB), P, 128, 8).unwrap();
        assert_eq!(
            s,
            VmSize {
                vcpus: 3,
                memory_mib: 1024 + 64 + 128
            }
        );
        // Never beyond the host's CPUs; small limits never shrink the profile.
        assert_eq!(
            vm_size(&pod(MIB, 5_000_000, 0), P, 128, 4).unwrap(),
            VmSize {
                vcpus: 4,
                memory_mib: 256
            }
        );
    }

    #[test]
    fn negative_limits_are_named() {
        let e = vm_size(&pod(-1, 0, 0), P, 128, 8).unwrap_err().to_string();
        assert!(
            e.contains("config.linux.resources.memory_limit_in_bytes"),
            "{e}"
        );
        let e = vm_size(&pod(i64::MAX, 0, 0), P, 128, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than a VM"), "{e}");
    }
}

//! The API filesystems PID 1 mounts.

use nix::mount::{mount, MsFlags};
use std::path::Path;

/// One filesystem to mount.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In order: later targets live inside earlier ones.
pub const GUEST_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666,newinstance"),
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// A mount that did not happen.
#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} on {target}")]
pub struct MountError {
    pub target: &'static str,
    pub fstype: &'static str,
    #[source]
    pub source: nix::Error,
}

/// Mounts each spec, creating its target; returns what failed. A target that is already
/// a mount of the kernel's (EBUSY) counts as done.
pub fn mount_all(specs: &[MountSpec]) -> Vec<MountError> {
    let mut failures = Vec::new();
    for spec in specs {
        let _ = std::fs::create_dir_all(spec.target);
        match mount(
            Some(spec.source),
            Path::new(spec.target),
            Some(spec.fstype),
            spec.flags,
            spec.data,
        ) {
            Ok(()) | Err(nix::Error::EBUSY) => {}
            Err(source) => failures.push(MountError {
                target: spec.target,
                fstype: spec.fstype,
                source,
            }),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_lies_inside_an_earlier_one_or_the_root() {
        for (i, spec) in GUEST_MOUNTS.iter().enumerate() {
            let parent = Path::new(spec.target).parent().unwrap();
            let ok = parent == Path::new("/")
                || GUEST_MOUNTS[..i]
                    .iter()
                    .any(|m| parent.starts_with(m.target));
            assert!(ok, "{} mounted before its parent", spec.target);
        }
    }
}

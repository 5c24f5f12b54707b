//! The host side of a pod's shared filesystem in tests: a busybox image rootfs made on
//! the host, and bind mounts placed under the shared directory (as the runtime will
//! place image rootfs and volumes), unmounted when dropped.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// Debian busybox-static: statically linked, so it runs in any guest.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Makes a container rootfs in `dir`: `/bin/busybox` with `applets` as symlinks, and
/// the directories a container's mounts need.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(dir.join(d)).expect("create rootfs dir");
    }
    std::fs::copy(HOST_BUSYBOX, dir.join("bin/busybox")).expect("copy busybox");
    for a in applets {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).expect("applet link");
    }
}

/// A bind mount, unmounted (with anything below it) when dropped.
#[derive(Debug)]
pub struct BindMount {
    pub target: PathBuf,
}

impl BindMount {
    /// Binds `source` at `target` (created), read-only if asked (a bind mount is made
    /// read-only by remounting it).
    pub fn new(source: &Path, target: &Path, read_only: bool) -> BindMount {
        std::fs::create_dir_all(target).expect("create bind target");
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind {} at {}: {e}", source.display(), target.display()));
        let bind = BindMount {
            target: target.to_path_buf(),
        };
        if read_only {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .unwrap_or_else(|e| panic!("remount {} read-only: {e}", target.display()));
        }
        bind
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.target, MntFlags::MNT_DETACH) {
            eprintln!("unmount {}: {e}", self.target.display());
        }
    }
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_string)
        .collect()
}

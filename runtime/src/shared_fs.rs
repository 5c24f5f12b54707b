//! The host half of a pod's shared filesystem: one directory per pod, exported to the
//! guest by virtiofsd (tag [`TAG`], mounted by the agent at [`GUEST_MOUNT`]). What a
//! container needs from the host is bind-mounted under it, per container:
//!
//! ```text
//! <state_dir>/pods/<pod id>/shared/            ← virtiofsd's shared dir
//!     <container id>/rootfs                    ← read-only bind of the image's rootfs
//!     <container id>/mounts/<n>                ← bind of the CRI mount n's host_path
//! ```
//!
//! The guest sees nothing else of the host. Bind mounts are found again from
//! `/proc/self/mountinfo` when they are released, so a daemon restarted after a crash
//! cleans up what an earlier one left.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// The virtio-fs tag of the pod share.
pub const TAG: &str = "cocoon";
/// Where the agent mounts it in the guest.
pub const GUEST_MOUNT: &str = "/run/cocoon/shared";

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind {source_path} on {target}: {errno}")]
    Bind {
        source_path: PathBuf,
        target: PathBuf,
        errno: nix::Error,
    },
    #[error("host_path {0}: {1}")]
    HostPath(PathBuf, String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ShareError {
    let path = path.to_path_buf();
    move |source| ShareError::Io { what, path, source }
}

/// One pod's share.
#[derive(Debug, Clone)]
pub struct PodShare {
    host_dir: PathBuf,
}

impl PodShare {
    pub fn new(state_dir: &Path, pod_id: &str) -> PodShare {
        PodShare {
            host_dir: state_dir.join("pods").join(pod_id).join("shared"),
        }
    }

    /// Creates the (empty) shared directory, readable by root only.
    pub fn create(&self) -> Result<(), ShareError> {
        std::fs::create_dir_all(&self.host_dir).map_err(io("create", &self.host_dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.host_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &self.host_dir))
    }

    pub fn host_dir(&self) -> &Path {
        &self.host_dir
    }

    /// Binds `image_rootfs` read-only for `container_id`; returns its guest path.
    pub fn bind_rootfs(
        &self,
        container_id: &str,
        image_rootfs: &Path,
    ) -> Result<String, ShareError> {
        let target = self.host_dir.join(container_id).join("rootfs");
        std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        bind(image_rootfs, &target, false, true)?;
        Ok(self.guest_path(&target))
    }

    /// Binds the CRI mount `index`'s `host_path` (a file or a directory, symlinks
    /// followed) for `container_id`; returns its guest path.
    pub fn bind_volume(
        &self,
        container_id: &str,
        index: usize,
        host_path: &Path,
        readonly: bool,
    ) -> Result<String, ShareError> {
        let meta = std::fs::metadata(host_path)
            .map_err(|e| ShareError::HostPath(host_path.into(), e.to_string()))?;
        let dir = self.host_dir.join(container_id).join("mounts");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let target = dir.join(index.to_string());
        if meta.is_dir() {
            std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        } else {
            std::fs::File::create(&target).map_err(io("create", &target))?;
        }
        bind(host_path, &target, true, readonly)?;
        Ok(self.guest_path(&target))
    }

    /// Unmounts and removes everything of `container_id`. Idempotent.
    pub fn release_container(&self, container_id: &str) -> Result<(), ShareError> {
        release_tree(&self.host_dir.join(container_id))
    }

    /// Unmounts and removes the whole share (and the pod's directory above it).
    /// Idempotent.
    pub fn destroy(&self) -> Result<(), ShareError> {
        release_tree(&self.host_dir)?;
        if let Some(pod_dir) = self.host_dir.parent() {
            match std::fs::remove_dir_all(pod_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", pod_dir)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn guest_path(&self, host: &Path) -> String {
        let rel = host.strip_prefix(&self.host_dir).unwrap_or(host);
        format!("{GUEST_MOUNT}/{}", rel.display())
    }
}

fn bind(source: &Path, target: &Path, recursive: bool, readonly: bool) -> Result<(), ShareError> {
    let err = |errno| ShareError::Bind {
        source_path: source.to_path_buf(),
        target: target.to_path_buf(),
        errno,
    };
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(err)?;
    if readonly {
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(err(e));
        }
    }
    Ok(())
}

/// Unmounts every mount at or below `dir` (deepest first), then removes `dir`.
fn release_tree(dir: &Path) -> Result<(), ShareError> {
    for m in mounts_under(dir) {
        if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
            if e != nix::Error::EINVAL && e != nix::Error::ENOENT {
                tracing::warn!(mount = %m.display(), error = %e, "unmount failed");
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// Mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }

    #[test]
    fn binds_are_read_only_when_asked_and_released() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("image");
        std::fs::create_dir_all(image.join("bin")).unwrap();
        std::fs::write(image.join("bin/x"), "x").unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let file = tmp.path().join("hosts");
        std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();

        let share = PodShare::new(&tmp.path().join("state"), "pod1");
        share.create().unwrap();
        let g = share.bind_rootfs("c1", &image).unwrap();
        assert_eq!(g, format!("{GUEST_MOUNT}/c1/rootfs"));
        let rootfs = share.host_dir().join("c1/rootfs");
        assert_eq!(std::fs::read_to_string(rootfs.join("bin/x")).unwrap(), "x");
        assert!(
            std::fs::write(rootfs.join("new"), "n").is_err(),
            "rootfs bind is read-only"
        );

        let g = share.bind_volume("c1", 0, &vol, false).unwrap();
        assert_eq!(g, format!("{GUEST_MOUNT}/c1/mounts/0"));
        std::fs::write(share.host_dir().join("c1/mounts/0/out"), "w").unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "w");
        share.bind_volume("c1", 1, &file, true).unwrap();
        assert!(std::fs::write(share.host_dir().join("c1/mounts/1"), "no").is_err());
        assert!(share
            .bind_volume("c1", 2, &tmp.path().join("missing"), true)
            .is_err());

        assert_eq!(mounts_under(share.host_dir()).len(), 3);
        share.release_container("c1").unwrap();
        share.release_container("c1").unwrap();
        assert!(mounts_under(share.host_dir()).is_empty());
        assert!(image.join("bin/x").exists(), "the image is untouched");
        share.destroy().unwrap();
        assert!(!tmp.path().join("state/pods/pod1").exists());
    }
}

//! The pod's shared filesystems: virtio-fs devices of the VM (image rootfs and volumes
//! the host shares) mounted under the agent's state directory.
//!
//! ```text
//! /run/cocoon/<mount point>   virtiofs <tag>, nosuid,nodev; a storage root of the pod
//! ```

use crate::error::{AgentError, Result};
use crate::undo::Undo;
use crate::validate;
use cocoon_proto::agent::v1::SharedFs;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Component, Path, PathBuf};

/// The longest virtio-fs tag (the device config holds 36 bytes).
pub const MAX_TAG_BYTES: usize = 36;
/// The agent's own directories in its state directory: never a mount point.
const RESERVED: [&str; 3] = ["sandboxes", "libcontainer", "tty"];

/// A validated shared filesystem to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMount {
    pub tag: String,
    pub mount_point: PathBuf,
}

/// Checks `given` before anything is created: tags, and mount points strictly below
/// `state_dir`, outside the agent's own directories, none inside another.
pub fn validate(given: &[SharedFs], state_dir: &Path) -> Result<Vec<SharedMount>> {
    let mut out: Vec<SharedMount> = Vec::with_capacity(given.len());
    for (i, fs) in given.iter().enumerate() {
        let field = |name: &str| format!("shared_filesystems[{i}].{name}");
        let tag = &fs.tag;
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES || !tag.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(AgentError::invalid(
                field("tag"),
                format!("{tag:?} is not 1 to {MAX_TAG_BYTES} printable characters"),
            ));
        }
        let mp_field = field("mount_point");
        let mount_point = validate::absolute_normal(&mp_field, &fs.mount_point)?;
        let below = mount_point
            .strip_prefix(state_dir)
            .ok()
            .filter(|rest| !rest.as_os_str().is_empty());
        let Some(rest) = below else {
            return Err(AgentError::invalid(
                mp_field,
                format!("{:?} is not below {}", fs.mount_point, state_dir.display()),
            ));
        };
        if let Some(Component::Normal(first)) = rest.components().next() {
            if RESERVED.iter().any(|r| first == *r) {
                return Err(AgentError::invalid(
                    mp_field,
                    format!("{:?} is in the agent's own {first:?}", fs.mount_point),
                ));
            }
        }
        if let Some(j) = out.iter().position(|o| {
            o.mount_point.starts_with(&mount_point) || mount_point.starts_with(&o.mount_point)
        }) {
            return Err(AgentError::invalid(
                mp_field,
                format!("{:?} overlaps shared_filesystems[{j}]", fs.mount_point),
            ));
        }
        out.push(SharedMount {
            tag: tag.clone(),
            mount_point,
        });
    }
    Ok(out)
}

/// Creates each mount point (which must not exist yet) and mounts its tag there. Every
/// step is recorded in `undo`. Returns the mount points, resolved (storage roots).
pub fn mount_all(mounts: &[SharedMount], undo: &mut Undo) -> Result<Vec<PathBuf>> {
    let mut roots = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let dir = &m.mount_point;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| AgentError::io("create shared fs parent dir", e))?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(AgentError::invalid(
                    format!("shared_filesystems[{i}].mount_point"),
                    format!("{} already exists", dir.display()),
                ))
            }
            Err(e) => return Err(AgentError::io("create shared fs mount point", e)),
        }
        {
            let dir = dir.clone();
            undo.push("shared fs mount point", move || {
                let _ = std::fs::remove_dir(&dir);
            });
        }
        mount(
            Some(m.tag.as_str()),
            dir,
            Some("virtiofs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| mount_error(i, &m.tag, e))?;
        {
            let dir = dir.clone();
            undo.push("shared fs mount", move || {
                let _ = umount2(&dir, MntFlags::MNT_DETACH);
            });
        }
        tracing::info!(tag = %m.tag, mount_point = %dir.display(), "shared fs mounted");
        roots.push(std::fs::canonicalize(dir).map_err(|e| AgentError::io("resolve shared fs", e))?);
    }
    Ok(roots)
}

/// Unmounts (with whatever the guest mounted below: virtio-fs submounts) and removes
/// each mount point. Failures are logged: destroying goes on.
pub fn unmount_all(mount_points: &[PathBuf]) {
    for dir in mount_points.iter().rev() {
        if let Err(e) = umount2(dir, MntFlags::MNT_DETACH) {
            tracing::warn!(mount_point = %dir.display(), "unmount shared fs: {e}");
        }
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::warn!(mount_point = %dir.display(), "remove shared fs mount point: {e}");
        }
    }
}

fn mount_error(i: usize, tag: &str, e: Errno) -> AgentError {
    match e {
        // No virtiofs filesystem type: not a guest kernel with virtio-fs (or a host).
        Errno::ENODEV => AgentError::precondition(format!(
            "shared_filesystems[{i}]: this kernel has no virtio-fs (is the agent running in a VM?)"
        )),
        // virtio-fs answers EINVAL for a tag no device has.
        Errno::EINVAL | Errno::ENOENT => AgentError::invalid(
            format!("shared_filesystems[{i}].tag"),
            format!("no virtio-fs device has tag {tag:?}"),
        ),
        e => AgentError::io(format!("mount virtio-fs {tag:?}"), e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "/run/cocoon";

    fn fs(tag: &str, mount_point: &str) -> SharedFs {
        SharedFs {
            tag: tag.into(),
            mount_point: mount_point.into(),
        }
    }

    fn err(given: &[SharedFs]) -> String {
        validate(given, Path::new(STATE)).unwrap_err().to_string()
    }

    #[test]
    fn good_mounts_validate() {
        let m = validate(
            &[
                fs("pod", "/run/cocoon/shared/pod"),
                fs("vol", "/run/cocoon/vol"),
            ],
            Path::new(STATE),
        )
        .unwrap();
        assert_eq!(m[0].mount_point, PathBuf::from("/run/cocoon/shared/pod"));
        assert_eq!(m[1].tag, "vol");
        assert!(validate(&[], Path::new(STATE)).unwrap().is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        for bad in ["", "a b", &"t".repeat(37) as &str] {
            let e = err(&[fs(bad, "/run/cocoon/x")]);
            assert!(e.starts_with("shared_filesystems[0].tag: "), "{e}");
        }
        for bad in [
            "relative",
            "/run/cocoon",
            "/run/cocoon/",
            "/run/cocoonx/a",
            "/etc",
            "/run/cocoon/../etc",
            "/run/cocoon/sandboxes/p",
            "/run/cocoon/libcontainer",
            "/run/cocoon/tty/x",
        ] {
            let e = err(&[fs("t", bad)]);
            assert!(
                e.starts_with("shared_filesystems[0].mount_point: "),
                "{bad}: {e}"
            );
        }
        let e = err(&[fs("a", "/run/cocoon/a"), fs("b", "/run/cocoon/a/b")]);
        assert!(e.starts_with("shared_filesystems[1].mount_point: "), "{e}");
        assert!(e.contains("overlaps shared_filesystems[0]"), "{e}");
    }

    #[test]
    fn a_failed_mount_leaves_nothing() {
        // Outside a VM (or without privileges) the mount fails; whatever the reason,
        // the mount point made for it goes again.
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("shared/pod");
        let m = SharedMount {
            tag: "cocoon-test-no-such-tag".into(),
            mount_point: mp.clone(),
        };
        let mut undo = Undo::new();
        assert!(mount_all(&[m], &mut undo).is_err());
        drop(undo);
        assert!(!mp.exists());
    }

    #[test]
    fn an_existing_mount_point_is_refused_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        let m = SharedMount {
            tag: "t".into(),
            mount_point: taken.clone(),
        };
        let mut undo = Undo::new();
        let e = mount_all(&[m], &mut undo).unwrap_err().to_string();
        assert!(e.starts_with("shared_filesystems[0].mount_point: "), "{e}");
        assert!(e.ends_with("already exists"), "{e}");
        drop(undo);
        assert!(taken.exists(), "a directory the agent did not create stays");
    }
}

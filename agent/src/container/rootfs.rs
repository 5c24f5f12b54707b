//! The container's root: a private writable overlay over the pod's read-only image
//! rootfs, so two containers of one image never see each other's writes.
//!
//! ```text
//! <container dir>/upper   the container's writes (on the pod's tmpfs)
//! <container dir>/work    overlayfs's work dir
//! <container dir>/rootfs  the overlay: lowerdir = image rootfs
//! ```

use crate::error::{AgentError, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// Characters overlayfs would read as option syntax in a lowerdir.
const OPTION_SYNTAX: &[char] = &[',', ':', '\\'];

/// Rejects a lower path overlayfs could misread (field `rootfs`).
pub fn check_lower(lower: &Path) -> Result<()> {
    let s = lower.to_string_lossy();
    if s.contains(OPTION_SYNTAX) {
        return Err(AgentError::invalid(
            "rootfs",
            format!("{s:?} contains one of {OPTION_SYNTAX:?}"),
        ));
    }
    if !lower.is_dir() {
        return Err(AgentError::invalid(
            "rootfs",
            format!("{s:?} is not a directory"),
        ));
    }
    Ok(())
}

/// Mounts the overlay in `dir`; returns its path.
pub fn mount_overlay(lower: &Path, dir: &Path) -> Result<PathBuf> {
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d)
            .map_err(|e| AgentError::io(format!("create {}", d.display()), e))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| AgentError::io("mount overlay rootfs", e.into()))?;
    Ok(rootfs)
}

/// Detaches the overlay (processes still inside keep their view until they exit).
pub fn unmount(rootfs: &Path) {
    if let Err(e) = umount2(rootfs, MntFlags::MNT_DETACH) {
        if e != nix::Error::EINVAL && e != nix::Error::ENOENT {
            tracing::warn!(rootfs = %rootfs.display(), "unmount: {e}");
        }
    }
}

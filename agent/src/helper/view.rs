//! A cgroup v2 view for hosts whose /sys/fs/cgroup is not cgroup v2.
//!
//! libcontainer looks for cgroups at /sys/fs/cgroup only. On a hybrid host (v1 plus a
//! unified hierarchy elsewhere) the helper enters a mount namespace of its own and
//! binds the agent's cgroup v2 root there, so libcontainer sees a pure v2 setup. The
//! agent's own mounts stay visible: the new namespace starts as a copy.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::Path;

pub fn enter(view: &Path) -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )?;
    mount(
        Some(view),
        "/sys/fs/cgroup",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
}

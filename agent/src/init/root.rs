//! Leaving the initramfs root: pivot_root(2) refuses to move a root that is the rootfs
//! (the initial ramfs), which is what every container's libcontainer does. PID 1 bind
//! mounts the rootfs at /.root, moves that mount over / and chroots into it: the same
//! files, but now on a mount with a parent, which pivot_root accepts. (Copying to a
//! tmpfs, as switch_root does, would cost memory for nothing.)

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot};
use std::path::Path;

const NEW_ROOT: &str = "/.root";

pub fn leave_rootfs() -> nix::Result<()> {
    let _ = std::fs::create_dir(NEW_ROOT);
    mount(
        Some("/"),
        NEW_ROOT,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    chdir(NEW_ROOT)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    chroot(".")?;
    chdir(Path::new("/"))
}

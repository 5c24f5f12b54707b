//! A pod inside the guest: its shared namespaces (held by a pause process), its tmpfs,
//! its cgroup and the roots its containers' files must come from.
//!
//! ```text
//! <state>/sandboxes/<id>/            tmpfs, sized per pod
//!     resolv.conf  hostname          bind-mounted into each container
//!     containers/<container id>/     config.json, rootfs/ (overlay), upper/, work/
//! <state>/<mount point>/             virtio-fs from the host (image rootfs, volumes)
//! ```

mod create;
mod destroy;
pub mod settings;
pub mod shared_fs;

use crate::init::reaper::ExitStatus;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::oneshot;

pub use create::create;
pub use destroy::destroy;

/// Which namespaces the pod's containers share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
}

#[derive(Debug)]
pub struct Sandbox {
    pub id: String,
    /// The pod's tmpfs.
    pub dir: PathBuf,
    /// The pod cgroup, relative to the hierarchy's root.
    pub cgroup: PathBuf,
    /// Cgroup directories created for the pod (the pod's and missing ancestors).
    pub cgroup_created: Vec<PathBuf>,
    /// Resolved storage roots (the shared filesystems' mount points among them).
    pub roots: Vec<PathBuf>,
    /// Where the pod's shared filesystems are mounted.
    pub shared_mounts: Vec<PathBuf>,
    pub shared: Shared,
    pub pause: nix::unistd::Pid,
    pub pause_exit: Mutex<Option<oneshot::Receiver<ExitStatus>>>,
    pub containers: Mutex<BTreeSet<String>>,
}

impl Sandbox {
    /// `/proc/<pause>/ns/<name>` for a shared namespace.
    pub fn ns_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{name}", self.pause))
    }

    pub fn container_ids(&self) -> Vec<String> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn add_container(&self, id: &str) {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    pub fn remove_container(&self, id: &str) {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

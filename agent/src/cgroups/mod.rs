//! cgroup v2 in the guest: one cgroup per pod, one per container below it.
//!
//! ```text
//! <root>/<pod cgroup, default cocoon/<sandbox id>>/      controllers enabled for children
//!        <pod cgroup>/<container id>/                     the container's processes
//! ```
//! `<root>` is /sys/fs/cgroup in a guest (PID 1 mounts cgroup v2 there). libcontainer
//! creates the container cgroups (from `linux.cgroupsPath`) and applies the spec's
//! limits; the agent creates and removes the pod's, reads statistics and OOM events,
//! and applies live updates through libcgroups.

pub mod oom;
pub mod stats;
pub mod update;

use crate::error::{AgentError, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Finds a cgroup v2 hierarchy: /sys/fs/cgroup on a v2 machine (every guest), or the
/// unified hierarchy of a hybrid host (where most controllers are bound to v1, so
/// limits cannot be set).
pub fn detect_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The hierarchy the agent manages.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub root: PathBuf,
}

impl Cgroups {
    pub fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The controllers the root offers (`cgroup.controllers`).
    pub fn available(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Creates the pod cgroup `rel` and its missing ancestors, enabling every available
    /// controller on the way down so containers below can be limited. Returns the
    /// directories it created, outermost first (for undoing).
    pub fn create_pod(&self, rel: &Path) -> Result<Vec<PathBuf>> {
        let controllers: Vec<String> = self.available().iter().map(|c| format!("+{c}")).collect();
        let mut created = Vec::new();
        let mut dir = self.root.clone();
        enable(&dir, &controllers);
        for part in rel.components() {
            dir.push(part);
            if !dir.exists() {
                if let Err(e) = std::fs::create_dir(&dir) {
                    self.remove_created(&created);
                    return Err(AgentError::io(
                        format!("create cgroup {}", dir.display()),
                        e,
                    ));
                }
                created.push(dir.clone());
            }
            enable(&dir, &controllers);
        }
        Ok(created)
    }

    /// Removes the directories `create_pod` made, innermost first, where empty: an
    /// ancestor another pod now uses stays.
    pub fn remove_created(&self, created: &[PathBuf]) {
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Kills every process below `rel` and removes its cgroups, innermost first.
    pub fn remove(&self, rel: &Path) -> Result<()> {
        let dir = self.path(rel);
        if !dir.exists() {
            return Ok(());
        }
        remove_tree(&dir).map_err(|e| AgentError::io(format!("remove cgroup {}", dir.display()), e))
    }

    /// Every process in `rel` and below.
    pub fn pids(&self, rel: &Path) -> Vec<i32> {
        let mut pids = Vec::new();
        collect_pids(&self.path(rel), &mut pids);
        pids.sort_unstable();
        pids
    }
}

fn enable(dir: &Path, controllers: &[String]) {
    let file = dir.join("cgroup.subtree_control");
    for c in controllers {
        // One at a time: a controller that cannot be enabled must not stop the others.
        let _ = std::fs::write(&file, c);
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for sub in subdirs(dir) {
        collect_pids(&sub, out);
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the processes of `dir` (cgroup.kill where the kernel has it) and removes it
/// and its children; an emptied cgroup can take a moment to become removable.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for sub in subdirs(dir) {
        remove_tree(&sub)?;
    }
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        let _ = std::fs::write(&kill, "1");
    } else if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let mut last = None;
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("cgroup busy")))
}

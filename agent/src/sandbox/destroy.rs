//! DestroySandbox: every container, the pause process, the cgroup, the tmpfs, the shared
//! filesystems.

use crate::container;
use crate::error::Result;
use crate::pods::Pods;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use std::sync::Arc;
use std::time::Duration;

/// How long the pause process may take to die after SIGKILL.
const PAUSE_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn destroy(pods: &Arc<Pods>, id: &str) -> Result<()> {
    let sandbox = pods.sandbox(id)?;
    for cid in sandbox.container_ids() {
        if let Err(e) = container::remove(pods, &cid, true).await {
            tracing::warn!(sandbox = id, container = %cid, "remove: {e}");
        }
    }
    let _ = kill(sandbox.pause, Signal::SIGKILL);
    let exit = sandbox
        .pause_exit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(exit) = exit {
        if tokio::time::timeout(PAUSE_EXIT_TIMEOUT, exit)
            .await
            .is_err()
        {
            tracing::warn!(sandbox = id, "pause process did not exit");
        }
    }
    let cgroups = pods.cgroups()?;
    cgroups.remove(&sandbox.cgroup)?;
    cgroups.remove_created(&sandbox.cgroup_created);
    if let Err(e) = umount2(&sandbox.dir, MntFlags::MNT_DETACH) {
        tracing::warn!(sandbox = id, "unmount tmpfs: {e}");
    }
    let _ = std::fs::remove_dir_all(&sandbox.dir);
    super::shared_fs::unmount_all(&sandbox.shared_mounts);
    pods.forget_sandbox(id);
    tracing::info!(sandbox = id, "sandbox destroyed");
    Ok(())
}

//! RemoveContainer: a stopped container's cgroup, libcontainer state, overlay and files.

use super::{rootfs, Status};
use crate::error::{AgentError, Result};
use crate::helper::Op;
use crate::pods::Pods;
use nix::sys::signal::{kill, Signal};
use std::sync::Arc;
use std::time::Duration;

/// How long a force-killed container may take to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn remove(pods: &Arc<Pods>, id: &str, force: bool) -> Result<()> {
    let container = pods.container(id)?;
    let _guard = container.lifecycle.lock().await;
    if container.status() != Status::Stopped {
        if !force {
            return Err(AgentError::precondition(format!(
                "container {id:?} is {:?}; stop it or remove with force",
                container.status()
            )));
        }
        let _ = kill(container.init.pid, Signal::SIGKILL);
        if tokio::time::timeout(KILL_TIMEOUT, container.init.wait())
            .await
            .is_err()
        {
            tracing::warn!(container = id, "process did not exit after SIGKILL");
        }
    }
    container.stop_oom_watch();
    // libcontainer kills what is left in the cgroup and removes it and its state.
    pods.helpers
        .run(Op::Delete { id: id.to_string() }, None)
        .await?;
    rootfs::unmount(&container.rootfs);
    let _ = std::fs::remove_dir_all(&container.dir);
    container.sandbox.remove_container(id);
    pods.forget_container(id);
    tracing::info!(container = id, "container removed");
    Ok(())
}

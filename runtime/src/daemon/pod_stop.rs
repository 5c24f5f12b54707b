//! StopPodSandbox and RemovePodSandbox. Both are idempotent, as kubelet expects: a pod
//! that is stopped already, or gone, is success.

use super::error::Result;
use super::records::PodState;
use super::{lock, Daemon, DaemonError, Pod};
use cocoon_proto::agent::v1::{DestroySandboxRequest, ShutdownRequest};
use std::sync::Arc;
use std::time::Duration;

/// How long a container stopped with its pod gets after SIGTERM.
const CONTAINER_GRACE: Duration = Duration::from_secs(2);

impl Daemon {
    pub async fn stop_pod(&self, id: &str) -> Result<()> {
        let pod = match self.pod(id) {
            Ok(p) => p,
            Err(DaemonError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = pod.op.lock().await;
        self.stop_pod_locked(&pod).await
    }

    async fn stop_pod_locked(&self, pod: &Arc<Pod>) -> Result<()> {
        for c in self.containers_of(&pod.id) {
            self.stop_container_inner(&c, CONTAINER_GRACE).await?;
        }
        if let Some(agent) = pod.agent() {
            let mut c = agent.containers.clone();
            let req = DestroySandboxRequest {
                sandbox_id: pod.id.clone(),
            };
            if let Err(e) =
                tokio::time::timeout(Duration::from_secs(10), c.destroy_sandbox(req)).await
            {
                tracing::warn!(pod = %pod.id, error = %e, "DestroySandbox timed out");
            }
        }
        self.teardown_vm(pod).await;
        for c in self.containers_of(&pod.id) {
            // The VM is gone; what its containers had on the host goes too.
            let _ = pod.share.release_container(&c.id);
        }
        self.save_pod(pod, |r| {
            r.state = PodState::NotReady;
            r.vm = None;
            r.message = "stopped".into();
        })?;
        Ok(())
    }

    /// Shuts the VM down (agent first, then the VMM), if it runs.
    pub(super) async fn teardown_vm(&self, pod: &Pod) {
        let agent = lock(&pod.agent).take();
        let vm = lock(&pod.vm).take();
        let Some(vm) = vm else { return };
        let grace = self.config.raw.pod.shutdown_grace();
        if let Some(a) = agent {
            let mut a = a.agent.clone();
            let _ = tokio::time::timeout(grace, a.shutdown(ShutdownRequest {})).await;
        }
        let exit = vm.stop(grace).await;
        tracing::info!(pod = %pod.id, %exit, "pod VM ended");
    }

    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        let pod = match self.pod(id) {
            Ok(p) => p,
            Err(DaemonError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = pod.op.lock().await;
        if pod.record().state == PodState::Ready || lock(&pod.vm).is_some() {
            self.stop_pod_locked(&pod).await?;
        }
        for c in self.containers_of(&pod.id) {
            self.forget_container(&pod, &c).await?;
        }
        pod.share.destroy().map_err(|e| {
            DaemonError::Internal(format!("remove the pod's shared directory: {e}"))
        })?;
        self.records.remove_pod(&pod.id)?;
        lock(&self.pods).remove(&pod.id);
        tracing::info!(pod = %pod.id, "pod removed");
        Ok(())
    }
}

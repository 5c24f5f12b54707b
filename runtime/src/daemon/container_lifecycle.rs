//! StartContainer, StopContainer, RemoveContainer, UpdateContainerResources and
//! ReopenContainerLog.

use super::error::{agent, DaemonError, Result};
use super::events::event;
use super::records::ContainerState;
use super::{lock, now_ns, Container, Daemon, Pod};
use crate::cri_log::writer::LogFile;
use cocoon_proto::agent::v1::{
    RemoveContainerRequest, SignalProcessRequest, StartContainerRequest, UpdateContainerRequest,
};
use k8s_cri::v1::{ContainerEventType, LinuxContainerResources};
use std::sync::Arc;
use std::time::Duration;

/// After SIGKILL, how long a container may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Daemon {
    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let _op = c.op.lock().await;
        let r = c.record();
        if r.state != ContainerState::Created {
            return Err(DaemonError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                c.id, r.state
            )));
        }
        let pod = self.pod(&c.pod_id)?;
        let client = pod.agent().ok_or_else(|| {
            DaemonError::FailedPrecondition(format!("pod sandbox {} has no running VM", pod.id))
        })?;
        if !r.log_path.as_os_str().is_empty() {
            let log =
                LogFile::open(&r.log_path).map_err(super::error::io("open log", &r.log_path))?;
            *lock(&c.log) = Some(Arc::new(log));
        }
        client
            .containers
            .clone()
            .start_container(StartContainerRequest {
                container_id: c.id.clone(),
            })
            .await
            .map_err(agent("StartContainer"))?;
        let rec = self.save_container(&c, |r| {
            r.state = ContainerState::Running;
            r.started_at_ns = now_ns();
        })?;
        self.monitor(c.clone(), client);
        self.emit(event(
            &rec,
            ContainerEventType::ContainerStartedEvent,
            &pod.record(),
        ));
        Ok(())
    }

    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(DaemonError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_container_inner(&c, timeout).await
    }

    /// SIGTERM, up to `timeout` for the exit, then SIGKILL. A container that is not
    /// running is left as it is.
    pub(super) async fn stop_container_inner(
        &self,
        c: &Container,
        timeout: Duration,
    ) -> Result<()> {
        let _op = c.op.lock().await;
        let r = c.record();
        if r.state != ContainerState::Running {
            return Ok(());
        }
        let Some(client) = self.pod(&c.pod_id).ok().and_then(|p| p.agent()) else {
            return Ok(());
        };
        let mut exited = c.exited.subscribe();
        let signal = |sig: i32| {
            let mut a = client.containers.clone();
            let req = SignalProcessRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
                signal: sig as u32,
            };
            async move { a.signal_process(req).await }
        };
        if !timeout.is_zero() {
            if let Err(s) = signal(libc::SIGTERM).await {
                tracing::debug!(container = %c.id, status = %s, "SIGTERM not delivered");
            }
            if tokio::time::timeout(timeout, exited.wait_for(|e| *e))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        if let Err(s) = signal(libc::SIGKILL).await {
            tracing::debug!(container = %c.id, status = %s, "SIGKILL not delivered");
        }
        let gone = tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e))
            .await
            .is_ok();
        if gone {
            Ok(())
        } else {
            Err(DaemonError::Internal(format!(
                "container {} did not exit within {KILL_WAIT:?} of SIGKILL",
                c.id
            )))
        }
    }

    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(DaemonError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let pod = self.pod(&c.pod_id)?;
        let _op = pod.op.lock().await;
        self.stop_container_inner(&c, Duration::ZERO).await?;
        self.forget_container(&pod, &c).await
    }

    /// Removes the container from the guest (if the VM runs), the host and the records.
    pub(super) async fn forget_container(&self, pod: &Pod, c: &Arc<Container>) -> Result<()> {
        if let Some(client) = pod.agent() {
            let req = RemoveContainerRequest {
                container_id: c.id.clone(),
                force: true,
            };
            match client.containers.clone().remove_container(req).await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(agent("RemoveContainer")(s)),
            }
        }
        pod.share
            .release_container(&c.id)
            .map_err(|e| DaemonError::Internal(format!("release the container's mounts: {e}")))?;
        self.images.release(&c.id);
        self.records.remove_container(&pod.id, &c.id)?;
        lock(&self.containers).remove(&c.id);
        *lock(&c.log) = None;
        let _ = c.exited.send(true);
        self.emit(event(
            &c.record(),
            ContainerEventType::ContainerDeletedEvent,
            &pod.record(),
        ));
        Ok(())
    }

    pub async fn update_container(
        &self,
        id: &str,
        linux: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let c = self.container(id)?;
        let _op = c.op.lock().await;
        let Some(linux) = linux else { return Ok(()) };
        let resources = super::spec::resources(Some(&linux))?;
        let r = c.record();
        if r.state == ContainerState::Running || r.state == ContainerState::Created {
            let client = self.pod(&c.pod_id)?.agent().ok_or_else(|| {
                DaemonError::FailedPrecondition(format!(
                    "pod sandbox {} has no running VM",
                    c.pod_id
                ))
            })?;
            client
                .containers
                .clone()
                .update_container(UpdateContainerRequest {
                    container_id: c.id.clone(),
                    resources_json: resources.to_string(),
                })
                .await
                .map_err(agent("UpdateContainer"))?;
        } else {
            return Err(DaemonError::FailedPrecondition(format!(
                "container {} has exited",
                c.id
            )));
        }
        self.save_container(&c, |r| {
            r.config
                .linux
                .get_or_insert_with(Default::default)
                .resources = Some(linux);
        })?;
        Ok(())
    }

    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.record().state != ContainerState::Running {
            return Err(DaemonError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let log = lock(&c.log).clone();
        match log {
            Some(l) => l.reopen().map_err(super::error::io("reopen log", l.path())),
            None => Err(DaemonError::FailedPrecondition(format!(
                "container {} has no log file",
                c.id
            ))),
        }
    }
}

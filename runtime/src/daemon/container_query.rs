//! ContainerStatus, ListContainers and container stats.

use super::error::{agent, Result};
use super::records::{ContainerRecord, ContainerState};
use super::{labels_match, now_ns, Container, Daemon};
use cocoon_proto::agent::v1::StatsContainerRequest;
use k8s_cri::v1::{
    Container as CriContainer, ContainerAttributes, ContainerFilter, ContainerState as CriState,
    ContainerStats, ContainerStatsFilter, ContainerStatus, ContainerStatusResponse, CpuUsage,
    ImageSpec, MemoryUsage, UInt64Value,
};
use std::collections::HashMap;

pub fn cri_state(s: ContainerState) -> CriState {
    match s {
        ContainerState::Created => CriState::ContainerCreated,
        ContainerState::Running => CriState::ContainerRunning,
        ContainerState::Exited => CriState::ContainerExited,
        ContainerState::Unknown => CriState::ContainerUnknown,
    }
}

fn image_spec(r: &ContainerRecord) -> ImageSpec {
    ImageSpec {
        image: r.image_id.clone(),
        user_specified_image: r.image_name.clone(),
        ..r.config.image.clone().unwrap_or_default()
    }
}

pub fn cri_status(r: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(r.state) as i32,
        created_at: r.created_at_ns,
        started_at: r.started_at_ns,
        finished_at: r.finished_at_ns,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r.config.mounts.clone(),
        log_path: r.log_path.to_string_lossy().into_owned(),
        resources: r
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| k8s_cri::v1::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        image_id: r.image_id.clone(),
        user: None,
    }
}

/// CPU and memory usage messages of totals (cumulative CPU ns, working set bytes).
pub fn cri_stats(
    ts: i64,
    cpu_ns: Option<u64>,
    working_set: Option<u64>,
) -> (Option<CpuUsage>, Option<MemoryUsage>) {
    let cpu = cpu_ns.map(|v| CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: Some(UInt64Value { value: v }),
        usage_nano_cores: None,
    });
    let mem = working_set.map(|v| MemoryUsage {
        timestamp: ts,
        working_set_bytes: Some(UInt64Value { value: v }),
        ..Default::default()
    });
    (cpu, mem)
}

impl Daemon {
    pub fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
        let c = self.container(id)?;
        let r = c.record();
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({ "pid": r.pid, "podId": r.pod_id, "config": r.config });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(cri_status(&r)),
            info,
        })
    }

    pub fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<CriContainer> {
        let f = filter.unwrap_or_default();
        self.containers_snapshot()
            .into_iter()
            .map(|c| c.record())
            .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
            .filter(|r| f.pod_sandbox_id.is_empty() || r.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|r| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(r.state) as i32)
            })
            .filter(|r| labels_match(&f.label_selector, &r.config.labels))
            .map(|r| CriContainer {
                id: r.id.clone(),
                pod_sandbox_id: r.pod_id.clone(),
                metadata: r.config.metadata.clone(),
                image: Some(image_spec(&r)),
                image_ref: r.image_ref.clone(),
                state: cri_state(r.state) as i32,
                created_at: r.created_at_ns,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                image_id: r.image_id.clone(),
            })
            .collect()
    }

    pub async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let c = self.container(id)?;
        self.container_stats_of(&c).await
    }

    /// The container's cgroup figures from the agent; a container that does not run has
    /// attributes only.
    pub(super) async fn container_stats_of(&self, c: &Container) -> Result<ContainerStats> {
        let r = c.record();
        let mut stats = ContainerStats {
            attributes: Some(ContainerAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            ..Default::default()
        };
        if r.state != ContainerState::Running {
            return Ok(stats);
        }
        let Some(client) = self.pod(&r.pod_id)?.agent() else {
            return Ok(stats);
        };
        let s = client
            .containers
            .clone()
            .stats_container(StatsContainerRequest {
                container_id: r.id.clone(),
            })
            .await
            .map_err(agent("StatsContainer"))?
            .into_inner();
        let ts = now_ns();
        let cpu = s.cpu.map(|c| c.usage_usec.saturating_mul(1000));
        // Working set as kubelet and cAdvisor mean it: usage without the inactive
        // (reclaimable) file cache; active file pages are part of the working set.
        let mem = s
            .memory
            .map(|m| m.usage_bytes.saturating_sub(m.inactive_file_bytes));
        let (cpu, memory) = cri_stats(ts, cpu, mem);
        stats.cpu = cpu;
        stats.memory = memory;
        Ok(stats)
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for c in self.containers_snapshot() {
            let r = c.record();
            if (!f.id.is_empty() && !r.id.starts_with(&f.id))
                || (!f.pod_sandbox_id.is_empty() && !r.pod_id.starts_with(&f.pod_sandbox_id))
                || !labels_match(&f.label_selector, &r.config.labels)
            {
                continue;
            }
            out.push(self.container_stats_of(&c).await?);
        }
        Ok(out)
    }
}

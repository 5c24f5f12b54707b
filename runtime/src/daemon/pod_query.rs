//! PodSandboxStatus, ListPodSandbox and pod stats.

use super::container_query::{cri_stats, cri_status};
use super::error::Result;
use super::records::{PodRecord, PodState};
use super::{labels_match, now_ns, Daemon};
use k8s_cri::v1::{
    LinuxPodSandboxStats, PodSandbox, PodSandboxAttributes, PodSandboxFilter, PodSandboxState,
    PodSandboxStats, PodSandboxStatsFilter, PodSandboxStatus, PodSandboxStatusResponse,
};
use std::collections::HashMap;

pub fn cri_pod_state(s: PodState) -> PodSandboxState {
    match s {
        PodState::Ready => PodSandboxState::SandboxReady,
        PodState::NotReady => PodSandboxState::SandboxNotready,
    }
}

pub fn cri_pod_status(r: &PodRecord) -> PodSandboxStatus {
    PodSandboxStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_pod_state(r.state) as i32,
        created_at: r.created_at_ns,
        network: None,
        linux: None,
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

impl Daemon {
    pub fn pod_status(&self, id: &str, verbose: bool) -> Result<PodSandboxStatusResponse> {
        let pod = self.pod(id)?;
        let r = pod.record();
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "vcpus": r.vcpus,
                "memoryMiB": r.memory_mib,
                "message": r.message,
                "startupMs": r.startup_ms,
                "vm": r.vm,
                "sharedDir": pod.share.host_dir(),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(PodSandboxStatusResponse {
            status: Some(cri_pod_status(&r)),
            info,
            containers_statuses: self
                .containers_of(&pod.id)
                .iter()
                .map(|c| cri_status(&c.record()))
                .collect(),
            timestamp: now_ns(),
        })
    }

    pub fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        let f = filter.unwrap_or_default();
        self.pods_snapshot()
            .into_iter()
            .map(|p| p.record())
            .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
            .filter(|r| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_pod_state(r.state) as i32)
            })
            .filter(|r| labels_match(&f.label_selector, &r.config.labels))
            .map(|r| PodSandbox {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                state: cri_pod_state(r.state) as i32,
                created_at: r.created_at_ns,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect()
    }

    pub async fn pod_stats(&self, id: &str) -> Result<PodSandboxStats> {
        let pod = self.pod(id)?;
        let r = pod.record();
        let mut containers = Vec::new();
        for c in self.containers_of(&pod.id) {
            containers.push(self.container_stats_of(&c).await?);
        }
        let sum = |f: &dyn Fn(&k8s_cri::v1::ContainerStats) -> Option<u64>| -> Option<u64> {
            let v: Vec<u64> = containers.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum())
        };
        let ts = now_ns();
        let cpu = sum(&|s| {
            s.cpu
                .as_ref()?
                .usage_core_nano_seconds
                .as_ref()
                .map(|v| v.value)
        });
        let mem = sum(&|s| {
            s.memory
                .as_ref()?
                .working_set_bytes
                .as_ref()
                .map(|v| v.value)
        });
        let (cpu, mem) = cri_stats(ts, cpu, mem);
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu,
                memory: mem,
                network: None,
                process: None,
                containers,
            }),
            windows: None,
        })
    }

    pub async fn list_pod_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for p in self.pods_snapshot() {
            let r = p.record();
            if (!f.id.is_empty() && !r.id.starts_with(&f.id))
                || !labels_match(&f.label_selector, &r.config.labels)
            {
                continue;
            }
            if r.state != PodState::Ready {
                continue;
            }
            out.push(self.pod_stats(&r.id).await?);
        }
        Ok(out)
    }
}

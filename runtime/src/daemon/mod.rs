//! The engine behind cocoond's CRI services: pods (one VM each), their containers, the
//! image store, the records that survive a restart, and container events. The gRPC
//! layer ([`crate::cri`]) only translates requests and errors.

mod container_create;
mod container_lifecycle;
mod container_query;
pub mod error;
mod events;
mod exec_sync;
mod ids;
mod monitor;
mod pod_query;
mod pod_run;
mod pod_stop;
pub mod records;
mod recovery;
pub mod sizing;
pub mod spec;
mod vm_watch;

pub use error::{DaemonError, Result};

use crate::agent_client::AgentClient;
use crate::config::Validated;
use crate::cri_log::writer::LogFile;
use crate::shared_fs::PodShare;
use cocoon_hypervisor::Vm;
use cocoon_image::ImageStore;
use k8s_cri::v1::ContainerEventResponse;
use records::{ContainerRecord, PodRecord, RecordDir};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Nanoseconds since the Unix epoch, as CRI timestamps are.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// CRI label selectors: every selector pair must be among the labels.
fn labels_match(
    selector: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// cocoond's state.
pub struct Daemon {
    pub config: Validated,
    pub images: ImageStore,
    records: RecordDir,
    pods: Mutex<BTreeMap<String, Arc<Pod>>>,
    containers: Mutex<BTreeMap<String, Arc<Container>>>,
    events: broadcast::Sender<ContainerEventResponse>,
}

/// A pod sandbox: its VM and agent while it runs.
pub struct Pod {
    pub id: String,
    pub share: PodShare,
    record: Mutex<PodRecord>,
    /// Held across a lifecycle operation (run, stop, remove, container create/remove),
    /// so two of them never interleave on one pod.
    op: tokio::sync::Mutex<()>,
    vm: Mutex<Option<Arc<Vm>>>,
    agent: Mutex<Option<AgentClient>>,
}

impl Pod {
    pub fn record(&self) -> PodRecord {
        lock(&self.record).clone()
    }

    /// The agent client, if the pod's VM runs.
    fn agent(&self) -> Option<AgentClient> {
        lock(&self.agent).clone()
    }
}

/// A container of a pod.
pub struct Container {
    pub id: String,
    pub pod_id: String,
    record: Mutex<ContainerRecord>,
    op: tokio::sync::Mutex<()>,
    log: Mutex<Option<Arc<LogFile>>>,
    /// Becomes true once the container has exited and its record says so.
    exited: watch::Sender<bool>,
}

impl Container {
    fn new(record: ContainerRecord) -> Container {
        let done = record.state == records::ContainerState::Exited;
        Container {
            id: record.id.clone(),
            pod_id: record.pod_id.clone(),
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
            log: Mutex::new(None),
            exited: watch::channel(done).0,
        }
    }

    pub fn record(&self) -> ContainerRecord {
        lock(&self.record).clone()
    }
}

impl Daemon {
    /// Opens the image store and the records, re-attaches to the VMs of pods that were
    /// running, and imports the built-in test image when it is missing.
    pub async fn start(config: Validated) -> anyhow::Result<Arc<Daemon>> {
        let raw = &config.raw;
        for dir in [&raw.state_dir, &raw.root_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
        }
        let images = ImageStore::open(&raw.root_dir.join("images"), raw.registries.clone())
            .map_err(|e| anyhow::anyhow!("open the image store: {e}"))?;
        let (events, _) = broadcast::channel(1024);
        let daemon = Arc::new(Daemon {
            records: RecordDir::new(&raw.root_dir),
            config,
            images,
            pods: Mutex::new(BTreeMap::new()),
            containers: Mutex::new(BTreeMap::new()),
            events,
        });
        recovery::recover(&daemon).await;
        if let Some(layout) = daemon.config.test_image_layout.clone() {
            if daemon.images.get(crate::config::TEST_IMAGE).is_none() {
                match daemon
                    .images
                    .import_oci_layout(&layout, crate::config::TEST_IMAGE)
                    .await
                {
                    Ok(i) => tracing::info!(id = %i.id, "imported the built-in test image"),
                    Err(e) => {
                        tracing::warn!(error = %e, layout = %layout.display(), "could not import the built-in test image")
                    }
                }
            }
        }
        Ok(daemon)
    }

    fn pod(&self, id: &str) -> Result<Arc<Pod>> {
        let pods = lock(&self.pods);
        ids::find(&pods, id, "pod sandbox").cloned()
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        let cs = lock(&self.containers);
        ids::find(&cs, id, "container").cloned()
    }

    fn pods_snapshot(&self) -> Vec<Arc<Pod>> {
        lock(&self.pods).values().cloned().collect()
    }

    fn containers_snapshot(&self) -> Vec<Arc<Container>> {
        lock(&self.containers).values().cloned().collect()
    }

    fn containers_of(&self, pod_id: &str) -> Vec<Arc<Container>> {
        lock(&self.containers)
            .values()
            .filter(|c| c.pod_id == pod_id)
            .cloned()
            .collect()
    }

    fn save_pod(&self, pod: &Pod, f: impl FnOnce(&mut PodRecord)) -> Result<PodRecord> {
        let mut r = lock(&pod.record);
        f(&mut r);
        self.records.save_pod(&r)?;
        Ok(r.clone())
    }

    fn save_container(
        &self,
        c: &Container,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        let mut r = lock(&c.record);
        f(&mut r);
        self.records.save_container(&r)?;
        Ok(r.clone())
    }

    /// Subscribes to container events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.events.subscribe()
    }
}

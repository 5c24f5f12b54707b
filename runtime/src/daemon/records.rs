//! What cocoond keeps on disk so that a restarted daemon finds its pods and containers:
//! one JSON file per pod and per container under `<root_dir>/pods/<pod id>/`, each
//! written atomically (temporary file, fsync, rename).

use super::error::{io, Result};
use cocoon_hypervisor::VmRecord;
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at_ns: i64,
    pub state: PodState,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The running VM, while there is one.
    pub vm: Option<VmRecord>,
    /// Why the pod is not ready, when it is not.
    pub message: String,
    /// Where RunPodSandbox's time went, in milliseconds.
    #[serde(default)]
    pub startup_ms: Option<StartupTimings>,
}

/// RunPodSandbox, split: VMM start, guest kernel, agent init, readiness handshake (from
/// [`crate::pod_vm::BootTimings`]), then the agent's CreateSandbox (incl. the shared
/// filesystem mount) — and the whole call.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StartupTimings {
    pub vmm_start: f64,
    pub kernel_boot: f64,
    pub agent_init: f64,
    pub handshake: f64,
    pub create_sandbox: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    /// `sha256:<config digest>` of the image it runs.
    pub image_id: String,
    /// The image as the user named it, and its digest reference.
    pub image_name: String,
    pub image_ref: String,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub state: ContainerState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Absolute path of the CRI log file; empty → no log.
    pub log_path: PathBuf,
    /// The container's init process, as a guest pid.
    pub pid: i32,
}

/// Where the records live.
#[derive(Debug, Clone)]
pub struct RecordDir {
    root: PathBuf,
}

impl RecordDir {
    pub fn new(root_dir: &Path) -> RecordDir {
        RecordDir {
            root: root_dir.join("pods"),
        }
    }

    fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.root.join(pod_id)
    }

    pub fn save_pod(&self, r: &PodRecord) -> Result<()> {
        let dir = self.pod_dir(&r.id);
        std::fs::create_dir_all(dir.join("containers")).map_err(io("create", &dir))?;
        write_json(&dir.join("pod.json"), r)
    }

    pub fn save_container(&self, r: &ContainerRecord) -> Result<()> {
        let dir = self.pod_dir(&r.pod_id).join("containers");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        write_json(&dir.join(format!("{}.json", r.id)), r)
    }

    pub fn remove_container(&self, pod_id: &str, id: &str) -> Result<()> {
        let p = self
            .pod_dir(pod_id)
            .join("containers")
            .join(format!("{id}.json"));
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", p)(e)),
            _ => Ok(()),
        }
    }

    pub fn remove_pod(&self, pod_id: &str) -> Result<()> {
        let p = self.pod_dir(pod_id);
        match std::fs::remove_dir_all(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", p)(e)),
            _ => Ok(()),
        }
    }

    /// Every pod with its containers. A record that does not parse is reported and
    /// skipped, never fatal: one corrupt file must not keep the node's runtime down.
    pub fn load_all(&self) -> Vec<(PodRecord, Vec<ContainerRecord>)> {
        let mut pods = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return pods;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let pod: PodRecord = match read_json(&dir.join("pod.json")) {
                Ok(p) => p,
                Err(why) => {
                    tracing::error!(dir = %dir.display(), %why, "skipping unreadable pod record");
                    continue;
                }
            };
            let mut containers = Vec::new();
            if let Ok(cs) = std::fs::read_dir(dir.join("containers")) {
                for c in cs.flatten() {
                    let path = c.path();
                    if path.extension().is_none_or(|x| x != "json") {
                        let _ = std::fs::remove_file(&path); // a temporary file of a crash
                        continue;
                    }
                    match read_json::<ContainerRecord>(&path) {
                        Ok(r) if r.pod_id == pod.id => containers.push(r),
                        Ok(_) => {
                            tracing::error!(path = %path.display(), "container record of another pod; skipped")
                        }
                        Err(why) => {
                            tracing::error!(path = %path.display(), %why, "skipping unreadable container record")
                        }
                    }
                }
            }
            pods.push((pod, containers));
        }
        pods
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(value)
        .map_err(|e| super::error::DaemonError::Internal(format!("encode record: {e}")))?;
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corrupt_ones_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path());
        let pod = PodRecord {
            id: "p1".into(),
            config: PodSandboxConfig {
                hostname: "h".into(),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at_ns: 5,
            state: PodState::Ready,
            vcpus: 1,
            memory_mib: 256,
            vm: None,
            message: String::new(),
            startup_ms: None,
        };
        dir.save_pod(&pod).unwrap();
        let c = ContainerRecord {
            id: "c1".into(),
            pod_id: "p1".into(),
            config: ContainerConfig::default(),
            image_id: "sha256:x".into(),
            image_name: "busybox".into(),
            image_ref: "busybox@sha256:x".into(),
            created_at_ns: 1,
            started_at_ns: 0,
            finished_at_ns: 0,
            state: ContainerState::Created,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: "/tmp/x.log".into(),
            pid: 0,
        };
        dir.save_container(&c).unwrap();
        std::fs::create_dir_all(tmp.path().join("pods/bad")).unwrap();
        std::fs::write(tmp.path().join("pods/bad/pod.json"), "{not json").unwrap();
        let all = dir.load_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0.config.hostname, "h");
        assert_eq!(all[0].1.len(), 1);
        assert_eq!(all[0].1[0].image_ref, "busybox@sha256:x");
        dir.remove_container("p1", "c1").unwrap();
        dir.remove_container("p1", "c1").unwrap();
        dir.remove_pod("p1").unwrap();
        assert!(dir.load_all().is_empty());
    }
}

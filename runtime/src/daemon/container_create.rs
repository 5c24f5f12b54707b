//! CreateContainer: the image's rootfs and the CRI mounts reach the guest through the
//! pod's shared filesystem; the agent creates the container from the spec built here.

use super::error::{agent, invalid, DaemonError, Result};
use super::events::event;
use super::records::{ContainerRecord, ContainerState, PodState};
use super::spec::{container_spec, GuestMount, ImageDefaults};
use super::{ids, lock, now_ns, Container, Daemon, Pod};
use cocoon_proto::agent::v1::CreateContainerRequest as AgentCreate;
use k8s_cri::v1::{ContainerConfig, ContainerEventType, MountPropagation};
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Daemon {
    pub async fn create_container(
        &self,
        pod_id: &str,
        config: Option<ContainerConfig>,
    ) -> Result<String> {
        let config = config.ok_or_else(|| invalid("config", "is missing"))?;
        let pod = self.pod(pod_id)?;
        let _op = pod.op.lock().await;
        let rec = pod.record();
        if rec.state != PodState::Ready {
            return Err(DaemonError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| invalid("config.metadata", "is missing"))?;
        if meta.name.is_empty() || meta.name.contains(['/', '\0']) || meta.name.len() > 253 {
            return Err(invalid(
                "config.metadata.name",
                format!("{:?} is not a valid name", meta.name),
            ));
        }
        if let Some(other) = self.containers_of(&pod.id).into_iter().find(|c| {
            c.record()
                .config
                .metadata
                .as_ref()
                .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        }) {
            return Err(DaemonError::AlreadyExists(format!(
                "container {:?} (attempt {}) exists already in pod {} as {}",
                meta.name, meta.attempt, pod.id, other.id
            )));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(invalid("config.image.image", "is empty"));
        }
        let log_path = log_path(&rec.config.log_directory, &config.log_path)?;
        let client = pod.agent().ok_or_else(|| {
            DaemonError::FailedPrecondition(format!("pod sandbox {} has no running VM", pod.id))
        })?;

        let id = ids::new_id();
        let (image, image_rootfs) = self.images.acquire(&image_name, &id)?;
        let made = self
            .make_container(
                &pod,
                &id,
                &config,
                &image,
                &image_rootfs,
                &log_path,
                client.clone(),
            )
            .await;
        let pid = match made {
            Ok(pid) => pid,
            Err(e) => {
                self.undo_create(&pod, &id, None).await;
                return Err(e);
            }
        };
        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            config,
            image_id: image.id.clone(),
            image_name,
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            created_at_ns: now_ns(),
            started_at_ns: 0,
            finished_at_ns: 0,
            state: ContainerState::Created,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path,
            pid,
        };
        if let Err(e) = self.records.save_container(&record) {
            // Unrecorded, the container would be unknown to a restarted daemon.
            self.undo_create(&pod, &id, Some(&client)).await;
            return Err(e);
        }
        let c = Arc::new(Container::new(record));
        lock(&self.containers).insert(id.clone(), c.clone());
        self.emit(event(
            &c.record(),
            ContainerEventType::ContainerCreatedEvent,
            &rec,
        ));
        Ok(id)
    }

    /// Takes back what a failed CreateContainer made: the container in the guest (when
    /// the agent made it), its host binds, its image reference.
    async fn undo_create(
        &self,
        pod: &Pod,
        id: &str,
        made_in: Option<&crate::agent_client::AgentClient>,
    ) {
        if let Some(client) = made_in {
            let req = cocoon_proto::agent::v1::RemoveContainerRequest {
                container_id: id.to_string(),
                force: true,
            };
            if let Err(s) = client.containers.clone().remove_container(req).await {
                tracing::warn!(container = %id, status = %s, "could not remove a half-created container");
            }
        }
        if let Err(e) = pod.share.release_container(id) {
            tracing::warn!(container = %id, error = %e, "could not release a half-created container's mounts");
        }
        self.images.release(id);
    }

    #[allow(clippy::too_many_arguments)]
    async fn make_container(
        &self,
        pod: &Pod,
        id: &str,
        config: &ContainerConfig,
        image: &cocoon_image::Image,
        image_rootfs: &Path,
        log_path: &Path,
        client: crate::agent_client::AgentClient,
    ) -> Result<i32> {
        let share = |e: crate::shared_fs::ShareError| match e {
            crate::shared_fs::ShareError::HostPath(p, why) => {
                invalid("config.mounts", format!("host_path {}: {why}", p.display()))
            }
            e => DaemonError::Internal(e.to_string()),
        };
        let rootfs = pod.share.bind_rootfs(id, image_rootfs).map_err(share)?;
        let mut mounts = Vec::new();
        for (i, m) in config.mounts.iter().enumerate() {
            let field = format!("config.mounts[{i}]");
            if !m.container_path.starts_with('/') {
                return Err(invalid(
                    format!("{field}.container_path"),
                    format!("{:?} is not absolute", m.container_path),
                ));
            }
            if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
                return Err(DaemonError::Unimplemented(format!(
                    "{field}.image: image volumes are not supported yet"
                )));
            }
            if !m.host_path.starts_with('/') {
                return Err(invalid(
                    format!("{field}.host_path"),
                    format!("{:?} is not absolute", m.host_path),
                ));
            }
            let source = pod
                .share
                .bind_volume(id, i, Path::new(&m.host_path), m.readonly)
                .map_err(|e| match e {
                    crate::shared_fs::ShareError::HostPath(p, why) => invalid(
                        format!("{field}.host_path"),
                        format!("{}: {why}", p.display()),
                    ),
                    e => DaemonError::Internal(e.to_string()),
                })?;
            mounts.push(GuestMount {
                destination: m.container_path.clone(),
                source,
                readonly: m.readonly,
                propagation: MountPropagation::try_from(m.propagation)
                    .unwrap_or(MountPropagation::PropagationPrivate),
            });
        }
        let defaults = ImageDefaults {
            user: image.config.user.clone(),
            env: image.config.env.clone(),
            entrypoint: image.config.entrypoint.clone(),
            cmd: image.config.cmd.clone(),
            working_dir: image.config.working_dir.clone(),
        };
        let spec = container_spec(
            config,
            &pod.record().config,
            &defaults,
            image_rootfs,
            &mounts,
        )?;
        if let Some(dir) = log_path
            .parent()
            .filter(|_| !log_path.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(super::error::io("create log directory", dir))?;
        }
        let mut c = client.containers.clone();
        let resp = c
            .create_container(AgentCreate {
                sandbox_id: pod.id.clone(),
                container_id: id.to_string(),
                oci_spec_json: spec,
                rootfs,
                mounts: vec![],
                stdin: config.stdin,
            })
            .await
            .map_err(agent("CreateContainer"))?;
        Ok(resp.into_inner().pid)
    }
}

/// The container's log file: the pod's log directory joined with the container's
/// relative log path (CRI's rule); no log when either is empty.
fn log_path(dir: &str, rel: &str) -> Result<PathBuf> {
    if dir.is_empty() || rel.is_empty() {
        return Ok(PathBuf::new());
    }
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(invalid(
            "config.log_path",
            format!("{rel:?} must be relative to the pod's log directory without '..'"),
        ));
    }
    Ok(Path::new(dir).join(rel_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_pod_directory() {
        assert_eq!(
            log_path("/var/log/pods/x", "c/0.log").unwrap(),
            Path::new("/var/log/pods/x/c/0.log")
        );
        assert_eq!(log_path("", "c.log").unwrap(), PathBuf::new());
        assert!(log_path("/l", "../../etc/passwd")
            .unwrap_err()
            .to_string()
            .contains("config.log_path"));
        assert!(log_path("/l", "/abs").is_err());
    }
}

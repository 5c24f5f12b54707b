//! Container events for GetContainerEvents: created, started, stopped, deleted, each
//! with the container's and its pod's status at that moment (what kubelet's evented
//! PLEG reads).

use super::container_query::cri_status;
use super::pod_query::cri_pod_status;
use super::records::{ContainerRecord, PodRecord};
use super::{now_ns, Daemon};
use k8s_cri::v1::{ContainerEventResponse, ContainerEventType};

pub fn event(
    c: &ContainerRecord,
    kind: ContainerEventType,
    pod: &PodRecord,
) -> ContainerEventResponse {
    ContainerEventResponse {
        container_id: c.id.clone(),
        container_event_type: kind as i32,
        created_at: now_ns(),
        pod_sandbox_status: Some(cri_pod_status(pod)),
        containers_statuses: vec![cri_status(c)],
    }
}

impl Daemon {
    /// Sends an event to every subscriber; nobody listening is fine.
    pub(super) fn emit(&self, e: ContainerEventResponse) {
        let _ = self.events.send(e);
    }
}

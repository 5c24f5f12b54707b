//! UpdateContainer: new cgroup limits for a live container.

use crate::cgroups::update;
use crate::container::Status;
use crate::error::{AgentError, Result};
use crate::pods::Pods;
use cocoon_proto::agent::v1::{UpdateContainerRequest, UpdateContainerResponse};
use oci_spec::runtime::LinuxResources;

pub fn handle(pods: &Pods, req: UpdateContainerRequest) -> Result<UpdateContainerResponse> {
    tracing::debug!(container = %req.container_id, "UpdateContainer");
    let resources: LinuxResources = serde_json::from_str(&req.resources_json)
        .map_err(|e| AgentError::invalid("resources_json", e))?;
    let c = pods.container(&req.container_id)?;
    if c.status() == Status::Stopped {
        return Err(AgentError::precondition(format!(
            "container {:?} has stopped",
            c.id
        )));
    }
    update::apply(&pods.cgroups()?.root, &c.cgroup, &resources)?;
    Ok(UpdateContainerResponse {})
}

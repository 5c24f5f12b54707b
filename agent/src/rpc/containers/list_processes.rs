//! ListProcesses.

use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{ListProcessesRequest, ListProcessesResponse};

pub fn handle(pods: &Pods, req: ListProcessesRequest) -> Result<ListProcessesResponse> {
    let c = pods.container(&req.container_id)?;
    Ok(ListProcessesResponse {
        pids: pods.cgroups()?.pids(&c.cgroup),
    })
}

//! StatsContainer.

use crate::cgroups::stats;
use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{ContainerStats, StatsContainerRequest};

pub fn handle(pods: &Pods, req: StatsContainerRequest) -> Result<ContainerStats> {
    let c = pods.container(&req.container_id)?;
    Ok(stats::read(&pods.cgroups()?.path(&c.cgroup)))
}

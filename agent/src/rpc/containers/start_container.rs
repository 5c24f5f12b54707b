//! StartContainer.

use crate::container;
use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{StartContainerRequest, StartContainerResponse};
use std::sync::Arc;

pub async fn handle(
    pods: &Arc<Pods>,
    req: StartContainerRequest,
) -> Result<StartContainerResponse> {
    tracing::debug!(container = %req.container_id, "StartContainer");
    let c = pods.container(&req.container_id)?;
    container::start(pods, &c).await?;
    Ok(StartContainerResponse {})
}

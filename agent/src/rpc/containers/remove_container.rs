//! RemoveContainer.

use crate::container;
use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{RemoveContainerRequest, RemoveContainerResponse};
use std::sync::Arc;

pub async fn handle(
    pods: &Arc<Pods>,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse> {
    tracing::debug!(container = %req.container_id, force = req.force, "RemoveContainer");
    container::remove(pods, &req.container_id, req.force).await?;
    Ok(RemoveContainerResponse {})
}

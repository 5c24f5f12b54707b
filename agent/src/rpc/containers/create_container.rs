//! CreateContainer.

use crate::container;
use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{CreateContainerRequest, CreateContainerResponse};
use std::sync::Arc;

pub async fn handle(
    pods: &Arc<Pods>,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse> {
    tracing::debug!(sandbox = %req.sandbox_id, container = %req.container_id, "CreateContainer");
    let c = container::create(pods, req).await?;
    Ok(CreateContainerResponse {
        pid: c.init.pid.as_raw(),
    })
}

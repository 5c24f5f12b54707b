//! DestroySandbox.

use crate::error::Result;
use crate::pods::Pods;
use crate::sandbox;
use cocoon_proto::agent::v1::{DestroySandboxRequest, DestroySandboxResponse};
use std::sync::Arc;

pub async fn handle(
    pods: &Arc<Pods>,
    req: DestroySandboxRequest,
) -> Result<DestroySandboxResponse> {
    tracing::debug!(sandbox = %req.sandbox_id, "DestroySandbox");
    sandbox::destroy(pods, &req.sandbox_id).await?;
    Ok(DestroySandboxResponse {})
}

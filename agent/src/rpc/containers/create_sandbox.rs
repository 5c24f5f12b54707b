//! CreateSandbox.

use crate::error::Result;
use crate::pods::Pods;
use crate::sandbox;
use cocoon_proto::agent::v1::{CreateSandboxRequest, CreateSandboxResponse};
use std::sync::Arc;

pub async fn handle(pods: &Arc<Pods>, req: CreateSandboxRequest) -> Result<CreateSandboxResponse> {
    tracing::debug!(sandbox = %req.sandbox_id, "CreateSandbox");
    let sandbox = sandbox::create(pods, req).await?;
    Ok(CreateSandboxResponse {
        pause_pid: sandbox.pause.as_raw(),
    })
}

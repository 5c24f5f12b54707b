//! WaitProcess.

use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{ProcessExit, WaitProcessRequest};

pub async fn handle(pods: &Pods, req: WaitProcessRequest) -> Result<ProcessExit> {
    tracing::debug!(container = %req.container_id, exec = %req.exec_id, "WaitProcess");
    let container = pods.container(&req.container_id)?;
    let process = container.process(&req.exec_id)?;
    let exit = process.wait().await;
    if req.forget && !req.exec_id.is_empty() {
        container.forget_exec(&req.exec_id);
    }
    Ok(exit)
}

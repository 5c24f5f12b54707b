//! WaitProcess.

use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{ProcessExit, WaitProcessRequest};

pub async fn handle(pods: &Pods, req: WaitProcessRequest) -> Result<ProcessExit> {
    tracing::debug!(container = %req.container_id, exec = %req.exec_id, "WaitProcess");
    let process = pods.container(&req.container_id)?.process(&req.exec_id)?;
    Ok(process.wait().await)
}

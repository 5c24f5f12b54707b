//! ExecProcess.

use crate::container;
use crate::error::Result;
use crate::pods::Pods;
use cocoon_proto::agent::v1::{ExecProcessRequest, ExecProcessResponse};
use std::sync::Arc;

pub async fn handle(pods: &Arc<Pods>, req: ExecProcessRequest) -> Result<ExecProcessResponse> {
    tracing::debug!(container = %req.container_id, exec = %req.exec_id, "ExecProcess");
    let c = pods.container(&req.container_id)?;
    let p = container::exec(pods, &c, req).await?;
    Ok(ExecProcessResponse {
        pid: p.pid.as_raw(),
    })
}

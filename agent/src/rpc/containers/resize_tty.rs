//! ResizeTty.

use crate::container::exec::terminal_size;
use crate::error::{AgentError, Result};
use crate::pods::Pods;
use cocoon_proto::agent::v1::{ResizeTtyRequest, ResizeTtyResponse};

pub fn handle(pods: &Pods, req: ResizeTtyRequest) -> Result<ResizeTtyResponse> {
    tracing::debug!(container = %req.container_id, exec = %req.exec_id, "ResizeTty");
    let (rows, cols) = terminal_size(req.rows, req.cols)?
        .ok_or_else(|| AgentError::invalid("rows", "0x0 is not a terminal size"))?;
    let process = pods.container(&req.container_id)?.process(&req.exec_id)?;
    let tty = process
        .stdio
        .tty
        .as_ref()
        .ok_or_else(|| AgentError::precondition("the process has no terminal"))?;
    tty.resize(rows, cols)
        .map_err(|e| AgentError::io("resize", e))?;
    Ok(ResizeTtyResponse {})
}

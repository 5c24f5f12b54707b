//! ReadOutput: a process's stdout or stderr as a server stream (see `crate::io` for the
//! buffering policy).

use super::BoxStream;
use crate::error::{AgentError, Result};
use crate::pods::Pods;
use cocoon_proto::agent::v1::{OutputChunk, OutputStream, ReadOutputRequest};
use futures::StreamExt;

pub fn handle(pods: &Pods, req: ReadOutputRequest) -> Result<BoxStream<OutputChunk>> {
    let process = pods.container(&req.container_id)?.process(&req.exec_id)?;
    let output = match OutputStream::try_from(req.stream) {
        Ok(OutputStream::Stdout) => process.stdio.stdout.clone(),
        Ok(OutputStream::Stderr) => process.stdio.stderr.clone().ok_or_else(|| {
            AgentError::precondition("a terminal process has no stderr; read stdout")
        })?,
        _ => return Err(AgentError::invalid("stream", "must be STDOUT or STDERR")),
    };
    let reader = output
        .reader()
        .ok_or_else(|| AgentError::precondition("the stream already has a reader"))?;
    Ok(Box::pin(reader.map(|data| Ok(OutputChunk { data }))))
}

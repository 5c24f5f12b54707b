//! WriteStdin: the client stream's bytes go to the process's stdin; the stream's end
//! closes it.

use crate::error::{to_status, AgentError};
use crate::pods::Pods;
use cocoon_proto::agent::v1::{StdinChunk, WriteStdinResponse};
use tonic::{Status, Streaming};

pub async fn handle(
    pods: &Pods,
    mut stream: Streaming<StdinChunk>,
) -> Result<WriteStdinResponse, Status> {
    let Some(first) = stream.message().await? else {
        return Err(to_status(AgentError::invalid("container_id", "no message")));
    };
    let process = pods
        .container(&first.container_id)
        .and_then(|c| c.process(&first.exec_id))
        .map_err(to_status)?;
    let mut stdin = process.stdio.stdin.lock().await;
    let stdin_err =
        |e: crate::io::stdin::StdinError| to_status(AgentError::precondition(e.to_string()));
    let mut bytes = 0u64;
    let mut chunk = Some(first);
    while let Some(c) = chunk {
        if !c.data.is_empty() {
            stdin.write(&c.data).await.map_err(stdin_err)?;
            bytes += c.data.len() as u64;
        }
        chunk = stream.message().await?;
    }
    stdin.close().await.map_err(stdin_err)?;
    Ok(WriteStdinResponse { bytes })
}

//! ExecSync: run a command in a running container, collect its output, honour the
//! timeout (the process is killed when it passes).

use super::error::{agent, invalid, DaemonError, Result};
use super::records::ContainerState;
use super::{ids, Daemon};
use crate::agent_client::AgentClient;
use cocoon_proto::agent::v1::{
    ExecProcessRequest, OutputStream, Process, ReadOutputRequest, SignalProcessRequest,
    WaitProcessRequest,
};
use k8s_cri::v1::ExecSyncResponse;
use std::time::Duration;

/// The most output ExecSync returns per stream (kubelet's own bound for probes is far
/// lower); more fails the call rather than growing the daemon without limit.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

impl Daemon {
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<ExecSyncResponse> {
        if cmd.is_empty() {
            return Err(invalid("cmd", "is empty"));
        }
        if timeout_s < 0 {
            return Err(invalid("timeout", format!("{timeout_s} is negative")));
        }
        let c = self.container(id)?;
        if c.record().state != ContainerState::Running {
            return Err(DaemonError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let client = self.pod(&c.pod_id)?.agent().ok_or_else(|| {
            DaemonError::FailedPrecondition(format!("pod sandbox {} has no running VM", c.pod_id))
        })?;
        let exec_id = ids::new_id();
        client
            .containers
            .clone()
            .exec_process(ExecProcessRequest {
                container_id: c.id.clone(),
                exec_id: exec_id.clone(),
                process: Some(Process {
                    args: cmd,
                    ..Default::default()
                }),
                rows: 0,
                cols: 0,
            })
            .await
            .map_err(agent("ExecProcess"))?;
        let run = collect(&client, &c.id, &exec_id);
        let outcome = if timeout_s == 0 {
            Ok(run.await)
        } else {
            tokio::time::timeout(Duration::from_secs(timeout_s as u64), run).await
        };
        let result = match outcome {
            Ok(r) => r,
            Err(_) => Err(DaemonError::DeadlineExceeded(format!(
                "command timed out after {timeout_s}s and was killed"
            ))),
        };
        if result.is_err() {
            // Whatever went wrong, the command must not outlive the call.
            let _ = client
                .containers
                .clone()
                .signal_process(SignalProcessRequest {
                    container_id: c.id.clone(),
                    exec_id: exec_id.clone(),
                    signal: libc::SIGKILL as u32,
                })
                .await;
        }
        result
    }
}

async fn collect(client: &AgentClient, id: &str, exec_id: &str) -> Result<ExecSyncResponse> {
    let (stdout, stderr) = tokio::join!(
        read_all(client, id, exec_id, OutputStream::Stdout),
        read_all(client, id, exec_id, OutputStream::Stderr)
    );
    let (stdout, stderr) = (stdout?, stderr?);
    let exit = client
        .containers
        .clone()
        .wait_process(WaitProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            forget: true,
        })
        .await
        .map_err(agent("WaitProcess"))?
        .into_inner();
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code: exit.exit_code,
    })
}

async fn read_all(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    stream: OutputStream,
) -> Result<Vec<u8>> {
    let mut chunks = client
        .containers
        .clone()
        .read_output(ReadOutputRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            stream: stream as i32,
        })
        .await
        .map_err(agent("ReadOutput"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = chunks.message().await.map_err(agent("ReadOutput"))? {
        if out.len() + chunk.data.len() > MAX_OUTPUT {
            return Err(DaemonError::ResourceExhausted(format!(
                "the command wrote more than {MAX_OUTPUT} bytes to {}",
                if stream == OutputStream::Stdout {
                    "stdout"
                } else {
                    "stderr"
                }
            )));
        }
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

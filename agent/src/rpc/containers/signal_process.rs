//! SignalProcess.

use crate::error::{AgentError, Result};
use crate::pods::Pods;
use cocoon_proto::agent::v1::{SignalProcessRequest, SignalProcessResponse};
use nix::sys::signal::{kill, Signal};

pub fn handle(pods: &Pods, req: SignalProcessRequest) -> Result<SignalProcessResponse> {
    tracing::debug!(container = %req.container_id, exec = %req.exec_id, signal = req.signal, "SignalProcess");
    let signal = i32::try_from(req.signal)
        .ok()
        .and_then(|s| Signal::try_from(s).ok())
        .ok_or_else(|| AgentError::invalid("signal", format!("{} is not a signal", req.signal)))?;
    let process = pods.container(&req.container_id)?.process(&req.exec_id)?;
    if process.exited().is_some() {
        return Err(AgentError::precondition("the process has exited"));
    }
    kill(process.pid, signal).map_err(|e| AgentError::io("kill", e.into()))?;
    Ok(SignalProcessResponse {})
}

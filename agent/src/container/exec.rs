//! ExecProcess: another process in a running container.

use super::process::{launch, ExitContext, Process};
use super::stdio::Pending;
use super::{spec, Container, Status};
use crate::cgroups::stats::oom_kills;
use crate::error::{AgentError, Result};
use crate::helper::Op;
use crate::pods::Pods;
use crate::validate;
use cocoon_proto::agent::v1::ExecProcessRequest;
use std::sync::Arc;

pub async fn exec(
    pods: &Arc<Pods>,
    container: &Container,
    req: ExecProcessRequest,
) -> Result<Arc<Process>> {
    validate::id("exec_id", &req.exec_id)?;
    let given = req
        .process
        .as_ref()
        .ok_or_else(|| AgentError::invalid("process", "missing"))?;
    let process = spec::exec_process(&container.template, given)?;
    let size = terminal_size(req.rows, req.cols)?;

    let _guard = container.lifecycle.lock().await;
    if container.status() != Status::Running {
        return Err(AgentError::precondition(format!(
            "container {:?} is {:?}, not Running",
            container.id,
            container.status()
        )));
    }
    if container.process(&req.exec_id).is_ok() {
        return Err(AgentError::exists("exec", &req.exec_id));
    }
    let cgroup_dir = pods.cgroups()?.path(&container.cgroup);
    let ctx = ExitContext {
        container_id: container.id.clone(),
        exec_id: req.exec_id.clone(),
        oom_baseline: oom_kills(&cgroup_dir),
        cgroup_dir,
    };
    let pending = Pending::new(pods, given.terminal, given.stdin, size)?;
    let path = container.dir.join(format!("exec-{}.json", req.exec_id));
    let json = serde_json::to_vec(&process).map_err(|e| AgentError::invalid("process", e))?;
    std::fs::write(&path, json).map_err(|e| AgentError::io("write process.json", e))?;
    let op = Op::Exec {
        id: container.id.clone(),
        process: path.clone(),
        console_socket: pending.console_path(),
    };
    let launched = launch(pods, op, pending, ctx).await;
    let _ = std::fs::remove_file(&path);
    let proc = launched?;
    let pid = proc.pid;
    container
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(req.exec_id.clone(), proc.clone());
    tracing::info!(container = %container.id, exec = %req.exec_id, %pid, "exec started");
    Ok(proc)
}

/// `(rows, cols)`, both or neither.
pub fn terminal_size(rows: u32, cols: u32) -> Result<Option<(u16, u16)>> {
    match (rows, cols) {
        (0, 0) => Ok(None),
        (r, c) if r > 0 && c > 0 && r <= u16::MAX as u32 && c <= u16::MAX as u32 => {
            Ok(Some((r as u16, c as u16)))
        }
        _ => Err(AgentError::invalid(
            "rows",
            format!("bad terminal size {rows}x{cols}"),
        )),
    }
}

//! One task per running container: its stdout and stderr into the CRI log file, and its
//! exit into the record and the event feed. Output is streamed from the agent (never
//! polled); the agent holds what was not read yet, so a daemon that restarts picks up
//! where the last one stopped reading.

use super::events::event;
use super::records::ContainerState;
use super::{lock, now_ns, Container, Daemon};
use crate::agent_client::AgentClient;
use crate::cri_log::writer::{LineWriter, LogFile, Stream};
use cocoon_proto::agent::v1::{
    ExitReason, OutputStream, ProcessExit, ReadOutputRequest, WaitProcessRequest,
};
use k8s_cri::v1::ContainerEventType;
use std::sync::Arc;
use std::time::Duration;

/// After the process exited, how long its output may take to drain into the log.
const DRAIN: Duration = Duration::from_secs(5);

impl Daemon {
    pub(super) fn monitor(self: &Arc<Self>, c: Arc<Container>, client: AgentClient) {
        let daemon = self.clone();
        tokio::spawn(async move {
            let tty = c.record().config.tty;
            let log = lock(&c.log).clone();
            let out = tokio::spawn(copy_output(
                client.clone(),
                c.id.clone(),
                Stream::Stdout,
                log.clone(),
            ));
            let err = (!tty).then(|| {
                tokio::spawn(copy_output(
                    client.clone(),
                    c.id.clone(),
                    Stream::Stderr,
                    log,
                ))
            });
            let exit = client
                .containers
                .clone()
                .wait_process(WaitProcessRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                    forget: false,
                })
                .await;
            let drained = tokio::time::timeout(DRAIN, async {
                let _ = out.await;
                if let Some(e) = err {
                    let _ = e.await;
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(container = %c.id, "output still open {DRAIN:?} after the exit; log may be incomplete");
            }
            daemon.record_exit(&c, exit.map(|r| r.into_inner()));
        });
    }

    fn record_exit(&self, c: &Container, exit: Result<ProcessExit, tonic::Status>) {
        if !lock(&self.containers).contains_key(&c.id) {
            return; // removed meanwhile
        }
        let saved = self.save_container(c, |r| {
            r.state = ContainerState::Exited;
            match &exit {
                Ok(e) => {
                    // The host's clock: the guest's may be off, and CRI times compare.
                    r.finished_at_ns = now_ns();
                    r.exit_code = e.exit_code;
                    (r.reason, r.message) = reason(e);
                }
                Err(s) => {
                    r.finished_at_ns = now_ns();
                    r.exit_code = 255;
                    r.reason = "Unknown".into();
                    r.message = format!("lost the container's process: {}", s.message());
                }
            }
        });
        match saved {
            Ok(rec) => {
                tracing::info!(container = %c.id, code = rec.exit_code, reason = %rec.reason, "container exited");
                let _ = c.exited.send(true);
                if let Ok(pod) = self.pod(&c.pod_id) {
                    self.emit(event(
                        &rec,
                        ContainerEventType::ContainerStoppedEvent,
                        &pod.record(),
                    ));
                }
            }
            Err(e) => {
                tracing::error!(container = %c.id, error = %e, "could not record the exit");
                let _ = c.exited.send(true);
            }
        }
    }
}

/// Kubernetes' reasons: Completed, Error, OOMKilled.
fn reason(e: &ProcessExit) -> (String, String) {
    match ExitReason::try_from(e.reason).unwrap_or(ExitReason::Unspecified) {
        ExitReason::Completed => ("Completed".into(), String::new()),
        ExitReason::OomKilled => (
            "OOMKilled".into(),
            "killed by the OOM killer in its memory limit".into(),
        ),
        ExitReason::Signaled => ("Error".into(), format!("killed by signal {}", e.signal)),
        _ => ("Error".into(), String::new()),
    }
}

async fn copy_output(client: AgentClient, id: String, stream: Stream, log: Option<Arc<LogFile>>) {
    let which = match stream {
        Stream::Stdout => OutputStream::Stdout,
        Stream::Stderr => OutputStream::Stderr,
    };
    let req = ReadOutputRequest {
        container_id: id.clone(),
        exec_id: String::new(),
        stream: which as i32,
    };
    let mut chunks = match client.containers.clone().read_output(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            tracing::warn!(container = %id, stream = stream.as_str(), status = %s, "ReadOutput failed");
            return;
        }
    };
    let mut lines = LineWriter::new(stream);
    loop {
        match chunks.message().await {
            Ok(Some(chunk)) => {
                if let Some(log) = &log {
                    if let Err(e) = lines.push(&chunk.data, log) {
                        tracing::warn!(container = %id, error = %e, "log write failed");
                    }
                }
            }
            Ok(None) => break,
            Err(s) => {
                tracing::warn!(container = %id, stream = stream.as_str(), status = %s, "output stream broke");
                break;
            }
        }
    }
    if let Some(log) = &log {
        let _ = lines.finish(log);
    }
}

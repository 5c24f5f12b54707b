//! Waiting until the agent answers: a readiness handshake, never a fixed sleep.
//!
//! Each attempt opens the hybrid vsock channel and calls Health. Attempts repeat with a
//! short, growing backoff until the agent answers, the VM ends (reported at once, with
//! its console), or the deadline passes (reported with the console's tail).

use super::{vsock_channel, AgentClient};
use cocoon_hypervisor::{Vm, VmExit};
use cocoon_proto::agent::v1::HealthRequest;
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
// A refused attempt costs a unix connect and a vsock RST: poll often rather than idle
// while the agent is already up.
const MAX_BACKOFF: Duration = Duration::from_millis(20);
/// One Health call may take this long once connected.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("VM ended before its agent answered: {exit}\n--- console ---\n{}", exit.console_tail)]
    VmExited { exit: VmExit },
    #[error("agent did not answer within {after:?} (last error: {last_error})\n--- console ---\n{console_tail}")]
    Timeout {
        after: Duration,
        last_error: String,
        console_tail: String,
    },
}

/// What the handshake took.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub attempts: u32,
    pub waited: Duration,
}

/// Waits until the agent in `vm` serves on `port`, at most `timeout`.
pub async fn wait_ready(
    vm: &Vm,
    port: u32,
    timeout: Duration,
) -> Result<(AgentClient, Readiness), ReadyError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    let mut last_error;
    loop {
        attempts += 1;
        let attempt = async {
            let channel = vsock_channel(vm.vsock_socket().to_path_buf(), port)
                .await
                .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
            let mut client = AgentClient::new(channel);
            tokio::time::timeout(HEALTH_TIMEOUT, client.agent.health(HealthRequest {}))
                .await
                .map_err(|_| "Health timed out".to_string())?
                .map_err(|s| format!("Health: {s}"))?;
            Ok::<_, String>(client)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            result = tokio::time::timeout(left, attempt) => match result {
                Ok(Ok(client)) => {
                    return Ok((client, Readiness { attempts, waited: start.elapsed() }));
                }
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = "attempt cut off by the deadline".into(),
            },
            exit = vm.wait() => return Err(ReadyError::VmExited { exit }),
        }
        if let Some(exit) = vm.exit() {
            return Err(ReadyError::VmExited { exit });
        }
        if Instant::now() + backoff >= deadline {
            return Err(ReadyError::Timeout {
                after: timeout,
                last_error,
                console_tail: vm.console_tail(cocoon_hypervisor::CONSOLE_TAIL_LINES),
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

//! Shutdown: stop serving; in a guest, PID 1 then powers the machine off.

use super::AgentState;
use cocoon_proto::agent::v1::ShutdownResponse;

pub fn shutdown(state: &AgentState) -> ShutdownResponse {
    tracing::info!("shutdown requested");
    // notify_one keeps the permit if the server is not waiting yet.
    state.shutdown.notify_one();
    ShutdownResponse {}
}

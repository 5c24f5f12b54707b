//! Health: the agent serves.

use cocoon_proto::agent::v1::{health_response::Status, HealthResponse};

pub fn health() -> HealthResponse {
    HealthResponse {
        status: Status::Serving as i32,
        agent_version: crate::VERSION.to_string(),
    }
}

//! The agent's gRPC services: thin handlers, one file per RPC.

mod containers;
mod diagnostics;
mod guest_details;
mod health;
mod shutdown;

pub use containers::ContainersService;
pub use diagnostics::DiagnosticsService;

use crate::boot_clock::BootMarks;
use crate::init::SetupReport;
use cocoon_proto::agent::v1::{
    agent_server::Agent, GetGuestDetailsRequest, GuestDetails, HealthRequest, HealthResponse,
    ShutdownRequest, ShutdownResponse,
};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// State the Agent service answers from.
#[derive(Debug)]
pub struct AgentState {
    /// True when the agent is PID 1 of a guest.
    pub guest: bool,
    pub started_ns: u64,
    /// Set once the listener is bound.
    pub ready_ns: OnceLock<u64>,
    pub setup: SetupReport,
    /// Notified by the Shutdown RPC; the server then stops.
    pub shutdown: Arc<Notify>,
}

impl AgentState {
    pub fn marks(&self) -> BootMarks {
        BootMarks {
            started_ns: self.started_ns,
            ready_ns: self.ready_ns.get().copied().unwrap_or(0),
        }
    }
}

/// `cocoon.agent.v1.Agent`.
#[derive(Debug, Clone)]
pub struct AgentService {
    state: Arc<AgentState>,
}

impl AgentService {
    pub fn new(state: Arc<AgentState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(health::health()))
    }

    async fn get_guest_details(
        &self,
        _request: Request<GetGuestDetailsRequest>,
    ) -> Result<Response<GuestDetails>, Status> {
        Ok(Response::new(guest_details::guest_details(&self.state)))
    }

    async fn shutdown(
        &self,
        _request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        Ok(Response::new(shutdown::shutdown(&self.state)))
    }
}

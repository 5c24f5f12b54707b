//! The agent's gRPC client, carried over the VM's hybrid vsock socket.

mod channel;
mod readiness;
pub mod transfer;

pub use channel::vsock_channel;
pub use readiness::{wait_ready, Readiness, ReadyError};

use cocoon_proto::agent::v1::{
    agent_client::AgentClient as AgentRpc, containers_client::ContainersClient,
    diagnostics_client::DiagnosticsClient,
};
use tonic::transport::Channel;

/// Largest gRPC message either way; matches the agent.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The agent's services on one channel.
#[derive(Debug, Clone)]
pub struct AgentClient {
    pub agent: AgentRpc<Channel>,
    pub diagnostics: DiagnosticsClient<Channel>,
    pub containers: ContainersClient<Channel>,
}

impl AgentClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            agent: AgentRpc::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            diagnostics: DiagnosticsClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            containers: ContainersClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }
}

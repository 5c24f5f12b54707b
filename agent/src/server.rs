//! Binds the listener and serves the agent's services until Shutdown.

use crate::boot_clock::since_boot_ns;
use crate::listen::ListenAddr;
use crate::pods::Pods;
use crate::rpc::{AgentService, AgentState, ContainersService, DiagnosticsService};
use cocoon_proto::agent::v1::{
    agent_server::AgentServer, containers_server::ContainersServer,
    diagnostics_server::DiagnosticsServer,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

/// How long in-flight calls may finish after Shutdown before the server is dropped.
const DRAIN: Duration = Duration::from_secs(2);

/// Largest gRPC message either way (bulk stdio chunks are far smaller).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("bind {addr}")]
    Bind {
        addr: ListenAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves until a Shutdown RPC, then returns (after at most [`DRAIN`] of draining).
pub async fn serve(
    addr: ListenAddr,
    state: Arc<AgentState>,
    pods: Arc<Pods>,
) -> Result<(), ServeError> {
    let agent = AgentServer::new(AgentService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let diagnostics = DiagnosticsServer::new(DiagnosticsService)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let containers = ContainersServer::new(ContainersService::new(pods))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let router = Server::builder()
        .add_service(agent)
        .add_service(diagnostics)
        .add_service(containers);
    let bind_err = |source| ServeError::Bind {
        addr: addr.clone(),
        source,
    };
    match &addr {
        ListenAddr::Unix { path } => {
            let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            mark_ready(&state, &addr);
            let incoming = UnixListenerStream::new(listener);
            let result = until_drained(&state, |signal| {
                router.serve_with_incoming_shutdown(incoming, signal)
            })
            .await;
            let _ = std::fs::remove_file(path);
            result
        }
        ListenAddr::Vsock { port } => {
            let vaddr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, *port);
            let listener = tokio_vsock::VsockListener::bind(vaddr).map_err(bind_err)?;
            mark_ready(&state, &addr);
            until_drained(&state, |signal| {
                router.serve_with_incoming_shutdown(listener.incoming(), signal)
            })
            .await
        }
    }
}

fn mark_ready(state: &AgentState, addr: &ListenAddr) {
    let _ = state.ready_ns.set(since_boot_ns());
    tracing::info!(%addr, "agent ready");
}

/// Runs the server built by `serve` with a shutdown signal tied to the Shutdown RPC;
/// once draining starts, in-flight calls get [`DRAIN`] before the server is dropped, so
/// a host holding connections open cannot delay power-off.
async fn until_drained<S, F>(state: &AgentState, serve: S) -> Result<(), ServeError>
where
    S: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    F: Future<Output = Result<(), tonic::transport::Error>>,
{
    let (draining_tx, mut draining) = watch::channel(false);
    let shutdown = state.shutdown.clone();
    let signal = Box::pin(async move {
        shutdown.notified().await;
        let _ = draining_tx.send(true);
    });
    let server = serve(signal);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.map_err(ServeError::from),
        _ = async {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("connections still open after {DRAIN:?}; closing them");
            Ok(())
        }
    }
}

//! A tonic channel whose connections are hybrid vsock streams.

use cocoon_hypervisor::hybrid_vsock;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

/// Connects a channel to the guest's vsock `port` through the device socket `uds`. Each
/// (re)connection does its own `CONNECT` handshake.
pub async fn vsock_channel(uds: PathBuf, port: u32) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by tonic and unused: the connector decides where bytes go.
    Endpoint::from_static("http://cocoon-agent")
        .connect_with_connector(service_fn(move |_| {
            let uds = uds.clone();
            async move {
                let stream = hybrid_vsock::connect(&uds, port).await?;
                Ok::<_, hybrid_vsock::HybridError>(TokioIo::new(stream))
            }
        }))
        .await
}

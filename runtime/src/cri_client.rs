//! A CRI v1 client of cocoond over its unix socket, for the `cocoon` CLI and the tests.

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::io;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

/// Where cocoond serves CRI unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/cocoon/cocoon.sock";

/// The largest message either side accepts: kubelet's limit, so that `ExecSync` output and
/// long listings fit.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Both CRI services over one connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// cocoond could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach cocoond at {}{}", .socket.display(), hint(.source))]
pub struct ConnectError {
    pub socket: PathBuf,
    #[source]
    pub source: tonic::transport::Error,
}

impl ConnectError {
    /// The operating system's reason, where the failure was one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        io_error(&self.source).map(io::Error::kind)
    }
}

/// What the person should check, from the operating system's reason.
fn hint(source: &tonic::transport::Error) -> &'static str {
    match io_error(source).map(io::Error::kind) {
        Some(io::ErrorKind::PermissionDenied) => " (may you use its socket? try sudo)",
        _ => " (is cocoond running?)",
    }
}

fn io_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// Connects to cocoond's CRI socket. Fails at once, naming the socket, when nothing listens.
pub async fn connect(socket: &Path) -> Result<CriClient, ConnectError> {
    let path = socket.to_path_buf();
    // The URI is required by tonic and unused: the connector decides where bytes go.
    let channel = Endpoint::from_static("http://cocoond")
        .connect_with_connector(service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|source| ConnectError {
            socket: socket.to_path_buf(),
            source,
        })?;
    tracing::debug!(socket = %socket.display(), "connected to cocoond");
    Ok(CriClient {
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        images: ImageServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    })
}

/// Connects to cocoond once its socket answers, trying every 50 ms until `timeout`; for
/// whoever has just started the daemon.
pub async fn connect_when_ready(
    socket: &Path,
    timeout: std::time::Duration,
) -> Result<CriClient, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match connect(socket).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_named_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cocoon.sock");
        let err = connect(&socket).await.unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        let message = err.to_string();
        assert!(message.contains(&socket.display().to_string()), "{message}");
        assert!(message.contains("is cocoond running?"), "{message}");
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cocoon.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = connect(&socket).await.unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::ConnectionRefused));
    }

    #[tokio::test]
    async fn waiting_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let timeout = std::time::Duration::from_millis(200);
        let err = connect_when_ready(&dir.path().join("s.sock"), timeout)
            .await
            .unwrap_err();
        assert!(started.elapsed() >= timeout);
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
    }
}

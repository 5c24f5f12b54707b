//! The CRI socket: created mode 0660 (group from the config), served until a signal.

use super::{Images, Runtime};
use crate::daemon::Daemon;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// CRI messages can be large (ListContainers on a busy node, ExecSync output).
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Binds the socket (replacing a stale one) with mode 0660 and the configured group.
pub fn bind(socket: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!(
                "remove stale socket {}: {e}",
                socket.display()
            ))
        }
        _ => {}
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)?
            .ok_or_else(|| anyhow::anyhow!("no group {g}"))?
            .gid;
        nix::unistd::chown(socket, None, Some(gid))?;
    }
    Ok(listener)
}

/// Serves both CRI services on `listener` until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let runtime = RuntimeServiceServer::new(Runtime {
        daemon: daemon.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(Images { daemon })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    tonic::transport::Server::builder()
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;

/// Why building or running the vsock device failed. Guest misbehaviour is never an
/// error here: it is counted (see [`crate::Metrics`]) and answered on the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was rejected.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// A socket path is already taken; we never remove files we did not create.
    #[error("{} already exists", .0.display())]
    SocketExists(PathBuf),
    /// Binding a unix socket failed.
    #[error("cannot bind {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An epoll operation failed.
    #[error("epoll")]
    Epoll(#[source] io::Error),
    /// The timer failed.
    #[error("timerfd")]
    Timer(#[source] io::Error),
    /// A virtqueue could not be accessed (for example its rings lie outside guest memory).
    #[error("virtqueue")]
    Queue(#[from] virtio_queue::Error),
}

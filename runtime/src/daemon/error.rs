//! What can go wrong serving the CRI, typed; [`crate::cri::status`] turns it into a gRPC
//! status at the one edge.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A request field is missing or wrong; the message names the field.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id:?} is ambiguous: it prefixes {matches}")]
    Ambiguous {
        kind: &'static str,
        id: String,
        matches: String,
    },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("image: {0}")]
    Image(#[from] cocoon_image::ImageError),
    #[error("start pod VM: {0}")]
    Vm(String),
    #[error("agent {step}: {}", status.message())]
    Agent {
        step: &'static str,
        status: tonic::Status,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

pub fn invalid(field: impl Into<String>, message: impl ToString) -> DaemonError {
    DaemonError::InvalidArgument {
        field: field.into(),
        message: message.to_string(),
    }
}

/// Maps an agent call's status into a [`DaemonError`] naming the step.
pub fn agent(step: &'static str) -> impl FnOnce(tonic::Status) -> DaemonError {
    move |status| DaemonError::Agent { step, status }
}

pub fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.into();
    move |source| DaemonError::Io { what, path, source }
}

//! The agent's typed error and its one mapping to gRPC status codes.

use tonic::{Code, Status};

/// What a container RPC can fail with. Messages are short and lowercase; causes are
/// kept as sources.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    /// `field` names the request field at fault, as the host spelled it.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper (the agent re-executed to drive libcontainer) reported a failure.
    #[error("{op}: {message}")]
    Helper { op: &'static str, message: String },
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub fn exists(kind: &'static str, id: impl Into<String>) -> Self {
        Self::AlreadyExists {
            kind,
            id: id.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    pub fn precondition(reason: impl Into<String>) -> Self {
        Self::FailedPrecondition(reason.into())
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The one place agent errors become gRPC statuses. The message carries the whole
/// source chain, so the host sees why without the guest's logs.
pub fn to_status(err: AgentError) -> Status {
    let code = match &err {
        AgentError::NotFound { .. } => Code::NotFound,
        AgentError::AlreadyExists { .. } => Code::AlreadyExists,
        AgentError::FailedPrecondition(_) => Code::FailedPrecondition,
        AgentError::InvalidArgument { .. } => Code::InvalidArgument,
        AgentError::Io { .. } | AgentError::Helper { .. } => Code::Internal,
    };
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Status::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s = to_status(AgentError::not_found("container", "c1"));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "container \"c1\" not found");
        let s = to_status(AgentError::invalid("rootfs", "must be absolute"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "rootfs: must be absolute");
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let s = to_status(AgentError::io("mount overlay", io));
        assert_eq!(s.code(), Code::Internal);
        assert!(
            s.message().starts_with("mount overlay: "),
            "{}",
            s.message()
        );
        assert_eq!(
            to_status(AgentError::exists("sandbox", "p")).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            to_status(AgentError::precondition("not running")).code(),
            Code::FailedPrecondition
        );
    }
}

//! [`DaemonError`] → gRPC status: the one place where codes are chosen.

use crate::daemon::DaemonError;
use cocoon_image::ImageError;
use tonic::{Code, Status};

pub fn to_status(e: DaemonError) -> Status {
    let code = match &e {
        DaemonError::InvalidArgument { .. } => Code::InvalidArgument,
        DaemonError::NotFound { .. } => Code::NotFound,
        DaemonError::Ambiguous { .. } => Code::InvalidArgument,
        DaemonError::AlreadyExists(_) => Code::AlreadyExists,
        DaemonError::FailedPrecondition(_) => Code::FailedPrecondition,
        DaemonError::Unimplemented(_) => Code::Unimplemented,
        DaemonError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        DaemonError::ResourceExhausted(_) => Code::ResourceExhausted,
        DaemonError::Image(i) => image_code(i),
        DaemonError::Vm(_) => Code::Internal,
        DaemonError::Agent { status, .. } => match status.code() {
            // What the agent refuses about the request is the caller's problem; what
            // fails in the guest is ours.
            c @ (Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition) => c,
            Code::Unavailable => Code::Unavailable,
            _ => Code::Internal,
        },
        DaemonError::Io { .. } | DaemonError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %e, "request failed");
    }
    Status::new(code, e.to_string())
}

pub fn image_code(e: &ImageError) -> Code {
    use cocoon_image::ErrorKind as K;
    match e.kind() {
        K::NotFound => Code::NotFound,
        K::InvalidReference => Code::InvalidArgument,
        K::InUse => Code::FailedPrecondition,
        K::DigestMismatch => Code::DataLoss,
        K::Registry => Code::Unavailable,
        K::Format => Code::InvalidArgument,
        K::Io => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::error::invalid;

    #[test]
    fn codes_and_messages() {
        let s = to_status(invalid("config.metadata.name", "is empty"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "config.metadata.name: is empty");
        let s = to_status(DaemonError::NotFound {
            kind: "container",
            id: "abc".into(),
        });
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("abc"));
        let s = to_status(DaemonError::Agent {
            step: "CreateContainer",
            status: Status::invalid_argument("rootfs: escapes"),
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("CreateContainer"));
    }
}

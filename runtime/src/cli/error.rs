//! What can go wrong in a command, worded for the person who typed it.

use super::resolve::ResolveError;
use crate::cri_client::ConnectError;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// cocoond answered a call with an error.
    #[error("{op}: {}", status_text(.status))]
    Rpc {
        op: &'static str,
        status: tonic::Status,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The request does not fit what exists (a running container without `-f`, …).
    #[error("{0}")]
    Refused(String),
    #[error("{what} timed out after {}", super::parse::format_duration(*.after))]
    Timeout { what: &'static str, after: Duration },
    #[error("cannot read the log {}", .path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

fn status_text(status: &tonic::Status) -> String {
    let message = status.message();
    let code = status.code();
    if message.is_empty() {
        format!("{code:?}")
    } else {
        format!("{message} ({code:?})")
    }
}

impl Error {
    /// The output went to a reader that left (`cocoon logs | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// cocoond's gRPC status code, where it answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// An error and its causes, `: `-separated, as one line for a person.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        // Transparent wrappers repeat their cause's words.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

/// Names the call a failed RPC made.
pub(crate) trait RpcResult<T> {
    fn rpc(self, op: &'static str) -> Result<T, Error>;
}

impl<T> RpcResult<T> for Result<tonic::Response<T>, tonic::Status> {
    fn rpc(self, op: &'static str) -> Result<T, Error> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| Error::Rpc { op, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_carry_the_causes() {
        let err = Error::Log {
            path: "/var/log/x.log".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            describe(&err),
            "cannot read the log /var/log/x.log: entity not found"
        );
    }

    #[test]
    fn rpc_errors_carry_the_call_the_message_and_the_code() {
        let failed: Result<tonic::Response<()>, _> =
            Err(tonic::Status::not_found("no image \"nope\""));
        let err = failed.rpc("pull image").unwrap_err();
        assert_eq!(err.to_string(), "pull image: no image \"nope\" (NotFound)");
        assert_eq!(err.code(), Some(tonic::Code::NotFound));

        let bare: Result<tonic::Response<()>, _> = Err(tonic::Status::unavailable(""));
        assert_eq!(
            bare.rpc("list pods").unwrap_err().to_string(),
            "list pods: Unavailable"
        );
    }
}

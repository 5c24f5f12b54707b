//! The image store's typed error and the coarse kinds callers map to gRPC codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What an image store operation can fail with. Messages are short and lowercase and
/// name the reference, digest, path or field at fault; causes are kept as sources.
///
/// Cloneable (sources are shared) so that one coalesced pull can hand its result to
/// every caller that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// No image has that name, digest or id.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The reference does not parse, or uses something we do not support.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The image is acquired by `users` (container ids, usually).
    #[error("image {image} is in use by {}", users.join(", "))]
    InUse { image: String, users: Vec<String> },
    /// Content did not hash to the digest that names it.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The registry could not be reached, refused us, or answered with an error.
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    /// A local file operation failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A manifest, config, layout or layer is malformed, unsupported or over a limit.
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
}

/// The coarse class of an [`ImageError`], for mapping to gRPC codes:
/// `NotFound` → NOT_FOUND, `InvalidReference` → INVALID_ARGUMENT, `InUse` →
/// FAILED_PRECONDITION, `Registry` → UNAVAILABLE (or UNKNOWN), the rest → INTERNAL or
/// DATA_LOSS as the caller sees fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidReference,
    InUse,
    DigestMismatch,
    Registry,
    Io,
    Format,
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::NotFound(_) => ErrorKind::NotFound,
            ImageError::InvalidReference { .. } => ErrorKind::InvalidReference,
            ImageError::InUse { .. } => ErrorKind::InUse,
            ImageError::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            ImageError::Registry { .. } => ErrorKind::Registry,
            ImageError::Io { .. } => ErrorKind::Io,
            ImageError::Format { .. } => ErrorKind::Format,
        }
    }

    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    pub fn format(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ImageError::Format {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn invalid_reference(reference: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ImageError::InvalidReference {
            reference: reference.into(),
            reason: reason.to_string(),
        }
    }

    pub fn registry(registry: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ImageError::Registry {
            registry: registry.into(),
            reason: reason.to_string(),
        }
    }

    /// The message followed by every source, `: `-separated (what a gRPC status or a
    /// log line should carry).
    pub fn chain(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        message
    }
}

/// Attaches the operation and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| ImageError::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let e = ImageError::io(
            "create",
            "/var/lib/x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.to_string(), "create /var/lib/x");
        assert!(
            e.chain().starts_with("create /var/lib/x: "),
            "{}",
            e.chain()
        );
        let e = ImageError::InUse {
            image: "sha256:ab".into(),
            users: vec!["c1".into(), "c2".into()],
        };
        assert_eq!(e.to_string(), "image sha256:ab is in use by c1, c2");
        assert_eq!(e.kind(), ErrorKind::InUse);
    }
}

//! The CRI v1 edge of cocoond: gRPC services over [`crate::daemon::Daemon`], errors
//! turned into gRPC statuses in one place ([`status`]), the unix socket server
//! ([`server`]).

mod image_service;
mod runtime_service;
pub mod server;
pub mod status;

pub use image_service::Images;
pub use runtime_service::Runtime;

/// The CRI API version we serve.
pub const CRI_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "cocoon";

//! Cocoon's virtio-vsock device and its hybrid unix-socket muxer.
//!
//! The guest sees a standard virtio-vsock device; the host side speaks Firecracker's
//! *hybrid vsock* protocol over unix sockets:
//! - a host client connects to `<uds_path>`, writes `CONNECT <port>\n`, reads
//!   `OK <host_port>\n` once the guest accepted, then the stream is raw;
//! - a guest connection to host (CID 2) port P is served by connecting to
//!   `<uds_path>_<P>`.
//!
//! [`VsockDevice`] is the transport-independent core (generic over the guest memory
//! type). [`vhost_user::VsockBackend`] serves it to QEMU as a vhost-user-vsock backend;
//! the `cocoon-vsock` binary runs that backend.
//!
//! The guest is untrusted: malformed chains, headers, credit overruns and out-of-state
//! packets are dropped or answered with RST and counted in [`Metrics`]; every queue and
//! buffer a guest can grow is bounded by [`VsockConfig`].

mod config;
mod csm;
mod device;
mod error;
mod metrics;
mod muxer;
mod packet;
pub mod proto;
pub mod vhost_user;

pub use config::{check_socket_path, ConfigError, VsockConfig, MAX_SOCKET_PATH};
pub use device::{
    Notify, VsockDevice, EVENT_QUEUE, NUM_QUEUES, RX_QUEUE, TX_QUEUE, VIRTIO_ID_VSOCK,
};
pub use error::Error;
pub use metrics::{Metrics, MetricsSnapshot};
pub use packet::MAX_CHAIN_DESCRIPTORS;

#[cfg(test)]
mod tests;

//! The vhost-user connection to the file system backend (virtiofsd), through the
//! `vhost` crate's frontend: the handshake at build time, the queue setup at
//! activation and the stop at reset. Each exchange (a request and its reply, if any)
//! has a deadline, which a [`Watchdog`] enforces by hanging up on a backend that
//! outlives it.
//!
//! Only what this device uses is negotiated: REPLY_ACK (every request is answered, so
//! a refusal is seen at once), RESET_DEVICE (a driver reset ends the FUSE session)
//! and MQ (to check the backend has both queues). Not CONFIG: the config space (the
//! tag) is the VMM's.

use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::watchdog::{Expired, Watchdog};

/// How often, and how far apart, connecting is tried while the socket is missing or
/// refuses (the backend may still be starting): about five seconds.
const CONNECT_ATTEMPTS: u32 = 50;
const CONNECT_RETRY: Duration = Duration::from_millis(100);
/// Longest one exchange with the backend may take: a hung backend fails the request
/// instead of blocking the thread that builds the VM, or the vCPU thread that
/// activates or resets the device.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// The protocol features this frontend uses, when the backend offers them.
const WANTED_PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::REPLY_ACK
    .union(VhostUserProtocolFeatures::RESET_DEVICE)
    .union(VhostUserProtocolFeatures::MQ);

/// A failed exchange with the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connecting to the vhost-user socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting up the vhost-user socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("starting the watchdog thread for the vhost-user socket {path}")]
    Watchdog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("vhost-user {request} on {path}")]
    Request {
        request: &'static str,
        path: PathBuf,
        #[source]
        source: vhost::Error,
    },
    #[error("vhost-user {request} on {path}: no answer within {after:?}; hung up on the backend")]
    Timeout {
        request: &'static str,
        path: PathBuf,
        after: Duration,
    },
    #[error("the vhost-user backend on {path} lacks {what}")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("the vhost-user backend on {path} has {got} queues, {want} needed")]
    TooFewQueues {
        path: PathBuf,
        got: u64,
        want: usize,
    },
    #[error(
        "guest memory at {addr:#x} is not shareable with the vhost-user backend on {path} \
         (not backed by a memfd)"
    )]
    PrivateMemory { path: PathBuf, addr: u64 },
    #[error("the vhost-user backend connection on {path} is gone")]
    Gone { path: PathBuf },
}

/// The connection, after the handshake.
pub struct Backend {
    path: PathBuf,
    frontend: Frontend,
    /// The same socket, to hang up on.
    socket: UnixStream,
    /// Hangs up on the backend when an exchange outlives its deadline.
    watchdog: Watchdog,
    /// What the backend offers (GET_FEATURES).
    features: u64,
    /// What was negotiated (SET_PROTOCOL_FEATURES); `None` without
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    protocol: Option<VhostUserProtocolFeatures>,
}

impl Backend {
    /// Connects to `path` (retrying while it is missing or refuses, for a few
    /// seconds), claims the backend (SET_OWNER) and negotiates protocol features, each
    /// exchange within `deadline`. Also returns a handle on the socket to watch for the
    /// backend hanging up.
    pub fn connect(
        path: &Path,
        queues: usize,
        deadline: Duration,
    ) -> Result<(Backend, UnixStream), BackendError> {
        let stream = connect_with_retry(path)?;
        let socket_err = |source| BackendError::Socket {
            path: path.to_owned(),
            source,
        };
        let watch = stream.try_clone().map_err(socket_err)?;
        let socket = stream.try_clone().map_err(socket_err)?;
        let dog_socket = stream.try_clone().map_err(socket_err)?;
        let watchdog =
            Watchdog::spawn(dog_socket, deadline).map_err(|source| BackendError::Watchdog {
                path: path.to_owned(),
                source,
            })?;
        let mut backend = Backend {
            path: path.to_owned(),
            frontend: Frontend::from_stream(stream, queues as u64),
            socket,
            watchdog,
            features: 0,
            protocol: None,
        };
        backend.handshake(queues)?;
        Ok((backend, watch))
    }

    /// Runs one exchange, `request`, under the watchdog's deadline.
    fn exchange<T>(
        &mut self,
        request: &'static str,
        call: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, BackendError> {
        let Backend {
            path,
            frontend,
            watchdog,
            ..
        } = self;
        match watchdog.guard(|| call(frontend)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(BackendError::Request {
                request,
                path: path.clone(),
                source,
            }),
            Err(Expired) => Err(BackendError::Timeout {
                request,
                path: path.clone(),
                after: watchdog.deadline(),
            }),
        }
    }

    fn handshake(&mut self, queues: usize) -> Result<(), BackendError> {
        self.exchange("SET_OWNER", |f| f.set_owner())?;
        self.features = self.exchange("GET_FEATURES", |f| f.get_features())?;
        if self.features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(self.unsupported("VIRTIO_F_VERSION_1"));
        }
        if self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Ok(());
        }
        let offered = self.exchange("GET_PROTOCOL_FEATURES", |f| f.get_protocol_features())?;
        let protocol = offered & WANTED_PROTOCOL;
        self.exchange("SET_PROTOCOL_FEATURES", |f| {
            f.set_protocol_features(protocol)
        })?;
        self.protocol = Some(protocol);
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let got = self.exchange("GET_QUEUE_NUM", |f| f.get_queue_num())?;
            if got < queues as u64 {
                return Err(BackendError::TooFewQueues {
                    path: self.path.clone(),
                    got,
                    want: queues,
                });
            }
        }
        Ok(())
    }

    fn unsupported(&self, what: &'static str) -> BackendError {
        BackendError::Unsupported {
            path: self.path.clone(),
            what,
        }
    }

    /// The socket the backend listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The virtio features the backend offers.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// SET_FEATURES: the driver's `acked` features the backend has, plus
    /// VHOST_USER_F_PROTOCOL_FEATURES where negotiated (the rings then start
    /// disabled, until [`Backend::start_vring`] enables them).
    pub fn set_features(&mut self, acked: u64) -> Result<(), BackendError> {
        let mut features = acked & self.features;
        if self.protocol.is_some() {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.exchange("SET_FEATURES", |f| f.set_features(features))
    }

    /// SET_MEM_TABLE: every region of `mem` with its memfd, file offset, guest
    /// address, size and our host address.
    pub fn set_mem_table(&mut self, mem: &GuestMemoryMmap) -> Result<(), BackendError> {
        let regions = mem
            .iter()
            .map(|region| {
                VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|_| {
                    BackendError::PrivateMemory {
                        path: self.path.clone(),
                        addr: region.start_addr().raw_value(),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.exchange("SET_MEM_TABLE", |f| f.set_mem_table(&regions).map(drop))
    }

    /// Gives queue `index` to the backend: size, ring addresses (host addresses),
    /// the next available index, the kick and call eventfds, and enables it.
    pub fn start_vring(
        &mut self,
        index: usize,
        ring: &VringConfigData,
        next_avail: u16,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), BackendError> {
        self.exchange("SET_VRING_NUM", |f| f.set_vring_num(index, ring.queue_size))?;
        self.exchange("SET_VRING_ADDR", |f| f.set_vring_addr(index, ring))?;
        self.exchange("SET_VRING_BASE", |f| f.set_vring_base(index, next_avail))?;
        self.exchange("SET_VRING_CALL", |f| f.set_vring_call(index, call))?;
        // The backend starts the ring once it has the kick.
        self.exchange("SET_VRING_KICK", |f| f.set_vring_kick(index, kick))?;
        if self.protocol.is_some() {
            self.exchange("SET_VRING_ENABLE", |f| f.set_vring_enable(index, true))?;
        }
        Ok(())
    }

    /// Stops the queues `started` (GET_VRING_BASE: the backend lets go of them and of
    /// their eventfds), then resets the device where the backend can (a fresh FUSE
    /// session for the next driver).
    pub fn stop(&mut self, started: &[usize]) -> Result<(), BackendError> {
        for &index in started {
            self.exchange("GET_VRING_BASE", |f| f.get_vring_base(index))?;
        }
        let reset = VhostUserProtocolFeatures::RESET_DEVICE;
        if self.protocol.is_some_and(|p| p.contains(reset)) {
            self.exchange("RESET_DEVICE", |f| f.reset_device())?;
        }
        Ok(())
    }

    /// Shuts the connection down (the backend sees it close; virtiofsd then exits).
    pub fn hang_up(&self) {
        // Fails only if the socket is not connected any more.
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

fn connect_with_retry(path: &Path) -> Result<UnixStream, BackendError> {
    let mut attempt = 1;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if attempt < CONNECT_ATTEMPTS
                    && matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
            {
                attempt += 1;
                std::thread::sleep(CONNECT_RETRY);
            }
            Err(source) => {
                return Err(BackendError::Connect {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

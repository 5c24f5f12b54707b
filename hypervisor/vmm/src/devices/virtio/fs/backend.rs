//! The vhost-user connection to the file system backend (virtiofsd), through the
//! `vhost` crate's frontend: the handshake at build time, the queue setup at
//! activation and the stop at reset.
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

/// How often, and how far apart, connecting is tried while the socket is missing or
/// refuses (the backend may still be starting): about five seconds.
const CONNECT_ATTEMPTS: u32 = 50;
const CONNECT_RETRY: Duration = Duration::from_millis(100);
/// Longest wait for one reply: a hung backend fails the request instead of blocking
/// the vCPU thread that activates or resets the device.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
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
    #[error("vhost-user {request} on {path}")]
    Request {
        request: &'static str,
        path: PathBuf,
        #[source]
        source: vhost::Error,
    },
    #[error("the vhost-user backend on {path} lacks {what}")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("the vhost-user backend on {path} has {got} queues, {want} needed")]
    TooFewQueues {
        path: PathBuf,
        got: u64,
        want: usize,
    },
    #[error("guest memory at {addr:#x} is not shareable (not backed by a memfd)")]
    PrivateMemory { addr: u64 },
    #[error("the vhost-user backend connection is gone")]
    Gone,
}

/// The connection, after the handshake.
pub struct Backend {
    path: PathBuf,
    frontend: Frontend,
    /// The same socket, to hang up on.
    socket: UnixStream,
    /// What the backend offers (GET_FEATURES).
    features: u64,
    /// What was negotiated (SET_PROTOCOL_FEATURES); `None` without
    /// VHOST_USER_F_PROTOCOL_FEATURES.
    protocol: Option<VhostUserProtocolFeatures>,
}

impl Backend {
    /// Connects to `path` (retrying while it is missing or refuses, for a few
    /// seconds), claims the backend (SET_OWNER) and negotiates protocol features.
    /// Also returns a handle on the socket to watch for the backend hanging up.
    pub fn connect(path: &Path, queues: usize) -> Result<(Backend, UnixStream), BackendError> {
        let stream = connect_with_retry(path)?;
        let socket_err = |source| BackendError::Socket {
            path: path.to_owned(),
            source,
        };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(socket_err)?;
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(socket_err)?;
        let watch = stream.try_clone().map_err(socket_err)?;
        let socket = stream.try_clone().map_err(socket_err)?;
        let mut backend = Backend {
            path: path.to_owned(),
            frontend: Frontend::from_stream(stream, queues as u64),
            socket,
            features: 0,
            protocol: None,
        };
        backend.handshake(queues)?;
        Ok((backend, watch))
    }

    fn handshake(&mut self, queues: usize) -> Result<(), BackendError> {
        let path = self.path.clone();
        let req = |request| request_error(&path, request);
        self.frontend.set_owner().map_err(req("SET_OWNER"))?;
        self.features = self.frontend.get_features().map_err(req("GET_FEATURES"))?;
        if self.features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(self.unsupported("VIRTIO_F_VERSION_1"));
        }
        if self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Ok(());
        }
        let offered = self
            .frontend
            .get_protocol_features()
            .map_err(req("GET_PROTOCOL_FEATURES"))?;
        let protocol = offered & WANTED_PROTOCOL;
        self.frontend
            .set_protocol_features(protocol)
            .map_err(req("SET_PROTOCOL_FEATURES"))?;
        self.protocol = Some(protocol);
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let got = self
                .frontend
                .get_queue_num()
                .map_err(req("GET_QUEUE_NUM"))?;
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

    fn request(&self, request: &'static str) -> impl Fn(vhost::Error) -> BackendError + '_ {
        request_error(&self.path, request)
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
        self.frontend
            .set_features(features)
            .map_err(self.request("SET_FEATURES"))
    }

    /// SET_MEM_TABLE: every region of `mem` with its memfd, file offset, guest
    /// address, size and our host address.
    pub fn set_mem_table(&mut self, mem: &GuestMemoryMmap) -> Result<(), BackendError> {
        let regions = mem
            .iter()
            .map(|region| {
                VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|_| {
                    BackendError::PrivateMemory {
                        addr: region.start_addr().raw_value(),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.frontend
            .set_mem_table(&regions)
            .map(drop)
            .map_err(self.request("SET_MEM_TABLE"))
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
        self.frontend
            .set_vring_num(index, ring.queue_size)
            .map_err(self.request("SET_VRING_NUM"))?;
        self.frontend
            .set_vring_addr(index, ring)
            .map_err(self.request("SET_VRING_ADDR"))?;
        self.frontend
            .set_vring_base(index, next_avail)
            .map_err(self.request("SET_VRING_BASE"))?;
        self.frontend
            .set_vring_call(index, call)
            .map_err(self.request("SET_VRING_CALL"))?;
        // The backend starts the ring once it has the kick.
        self.frontend
            .set_vring_kick(index, kick)
            .map_err(self.request("SET_VRING_KICK"))?;
        if self.protocol.is_some() {
            self.frontend
                .set_vring_enable(index, true)
                .map_err(self.request("SET_VRING_ENABLE"))?;
        }
        Ok(())
    }

    /// Stops the queues `started` (GET_VRING_BASE: the backend lets go of them and of
    /// their eventfds), then resets the device where the backend can (a fresh FUSE
    /// session for the next driver).
    pub fn stop(&mut self, started: &[usize]) -> Result<(), BackendError> {
        for &index in started {
            self.frontend
                .get_vring_base(index)
                .map_err(self.request("GET_VRING_BASE"))?;
        }
        let reset = VhostUserProtocolFeatures::RESET_DEVICE;
        if self.protocol.is_some_and(|p| p.contains(reset)) {
            self.frontend
                .reset_device()
                .map_err(self.request("RESET_DEVICE"))?;
        }
        Ok(())
    }

    /// Shuts the connection down (the backend sees it close; virtiofsd then exits).
    pub fn hang_up(&self) {
        // Fails only if the socket is not connected any more.
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

fn request_error<'a>(
    path: &'a Path,
    request: &'static str,
) -> impl Fn(vhost::Error) -> BackendError + 'a {
    move |source| BackendError::Request {
        request,
        path: path.to_owned(),
        source,
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

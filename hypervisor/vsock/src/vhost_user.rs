//! The vhost-user-vsock backend: serves a [`VsockDevice`] to a vhost-user frontend
//! (QEMU's `vhost-user-vsock-device` / `vhost-user-vsock-pci`).
//!
//! QEMU has no `guest-cid` property for vhost-user-vsock: the CID comes from this
//! backend's config space (VHOST_USER_PROTOCOL_F_CONFIG). The device's epoll fd is
//! registered with the vring worker's epoll, so host-socket readiness and queue kicks are
//! handled on one thread.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::config::{check_socket_path, ConfigError};
use crate::device::{VsockDevice, EVENT_QUEUE, NUM_QUEUES, RX_QUEUE, TX_QUEUE};

/// Largest queue the frontend may set up.
const MAX_QUEUE_SIZE: usize = 1024;
/// Event id of the device's epoll fd in the vring worker (ids up to `NUM_QUEUES` are
/// reserved for the queues and the worker's exit event).
const DEVICE_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// Why serving the frontend failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The vhost-user socket path is unusable.
    #[error("bad vhost-user socket path")]
    Path(#[from] ConfigError),
    /// The vhost-user socket path is taken.
    #[error("{} already exists", .0.display())]
    SocketExists(PathBuf),
    /// Binding the vhost-user socket failed.
    #[error("cannot listen on {}", path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: vhost::vhost_user::Error,
    },
    /// Setting up the vhost-user handler failed.
    #[error("vhost-user handler setup")]
    Setup(#[source] vhost_user_backend::VhostUserHandlerError),
    /// The session with the frontend failed (accepting it, or a message it sent).
    #[error("vhost-user session")]
    Session(#[source] vhost::vhost_user::Error),
    /// The request-handling thread could not be started.
    #[error("cannot start the vhost-user thread")]
    Thread(#[source] io::Error),
    /// The request-handling thread panicked.
    #[error("the vhost-user thread panicked")]
    Panicked,
    /// The device fd could not be added to the vring worker's epoll.
    #[error("cannot register the device with the vring worker")]
    Register(#[source] io::Error),
}

/// A [`VsockDevice`] as a vhost-user backend.
pub struct VsockBackend {
    device: VsockDevice,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
}

impl VsockBackend {
    /// Wraps `device`.
    pub fn new(device: VsockDevice) -> Self {
        VsockBackend { device, mem: None }
    }

    /// The wrapped device.
    pub fn device(&self) -> &VsockDevice {
        &self.device
    }

    /// Runs the queues that are enabled and signals the guest where needed.
    fn process(&mut self, vrings: &[VringRwLock]) -> io::Result<()> {
        let Some(mem) = self.mem.as_ref().map(|m| m.memory()) else {
            return Ok(());
        };
        let (Some(rx), Some(tx)) = (vrings.get(RX_QUEUE), vrings.get(TX_QUEUE)) else {
            return Ok(());
        };
        let mut rx = rx.get_mut();
        let mut tx = tx.get_mut();
        let (rx_on, tx_on) = (rx.is_enabled(), tx.is_enabled());
        let notify = self
            .device
            .process_queues(
                &*mem,
                rx_on.then(|| rx.get_queue_mut()),
                tx_on.then(|| tx.get_queue_mut()),
            )
            .map_err(io::Error::other)?;
        if notify.tx {
            tx.signal_used_queue()?;
        }
        if notify.rx {
            rx.signal_used_queue()?;
        }
        Ok(())
    }
}

impl VhostUserBackendMut for VsockBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
    }

    fn reset_device(&mut self) {
        self.device.reset();
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The handler sets it on each vring's queue; the device reads it from there.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.device.config_space();
        let start = (offset as usize).min(config.len());
        let end = start.saturating_add(size as usize).min(config.len());
        config[start..end].to_vec()
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        match device_event {
            DEVICE_EVENT => {
                self.device.handle_event().map_err(io::Error::other)?;
                self.process(vrings)
            }
            e if usize::from(e) == RX_QUEUE || usize::from(e) == TX_QUEUE => self.process(vrings),
            e if usize::from(e) == EVENT_QUEUE => Ok(()),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
}

/// Binds the vhost-user socket at `path`, which must not exist (and is removed when the
/// returned listener is dropped).
pub fn bind_listener(path: &Path) -> Result<Listener, ServeError> {
    check_socket_path("socket", path)?;
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(ServeError::SocketExists(path.to_owned()));
    }
    Listener::new(path, false).map_err(|source| ServeError::Listen {
        path: path.to_owned(),
        source,
    })
}

/// Serves `device` to exactly one frontend that connects to `listener`; returns when the
/// frontend disconnects (`Ok`) or the session fails.
pub fn serve_one(device: VsockDevice, listener: &mut Listener) -> Result<(), ServeError> {
    use std::os::unix::io::AsRawFd;

    let device_fd = device.as_raw_fd();
    let backend = Arc::new(RwLock::new(VsockBackend::new(device)));
    let mut daemon = VhostUserDaemon::new(
        "cocoon-vsock".to_owned(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )?;
    let handlers = daemon.get_epoll_handlers();
    for h in handlers.iter().take(1) {
        h.register_listener(device_fd, EventSet::IN, u64::from(DEVICE_EVENT))
            .map_err(ServeError::Register)?;
    }
    let res = daemon.start(listener).and_then(|()| daemon.wait());
    for h in &handlers {
        h.send_exit_event();
    }
    match res {
        Ok(()) => Ok(()),
        Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl From<vhost_user_backend::Error> for ServeError {
    fn from(e: vhost_user_backend::Error) -> Self {
        use vhost_user_backend::Error as E;
        match e {
            E::NewVhostUserHandler(e) => ServeError::Setup(e),
            E::CreateBackendListener(e)
            | E::CreateBackendReqHandler(e)
            | E::CreateVhostUserListener(e)
            | E::HandleRequest(e) => ServeError::Session(e),
            E::StartDaemon(e) => ServeError::Thread(e),
            E::WaitDaemon(_) => ServeError::Panicked,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::VsockConfig;

    fn backend(dir: &Path) -> VsockBackend {
        VsockBackend::new(VsockDevice::new(VsockConfig::new(42, dir.join("v.sock"))).unwrap())
    }

    #[test]
    fn config_space_is_the_guest_cid() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(dir.path());
        assert_eq!(b.get_config(0, 8), 42u64.to_le_bytes());
        assert_eq!(b.get_config(0, 4), [42, 0, 0, 0]);
        assert_eq!(b.get_config(4, 100), [0; 4]);
        assert!(b.get_config(8, 8).is_empty());
        assert!(b.get_config(u32::MAX, u32::MAX).is_empty());
    }

    #[test]
    fn features() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(dir.path());
        let f = b.features();
        assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
        assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        assert!(b
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG));
        assert_eq!(b.num_queues(), 3);
    }

    #[test]
    fn listener_refuses_existing_and_long_paths() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"").unwrap();
        assert!(matches!(
            bind_listener(&taken),
            Err(ServeError::SocketExists(_))
        ));
        let long = dir.path().join("x".repeat(120));
        assert!(matches!(bind_listener(&long), Err(ServeError::Path(_))));
    }

    #[test]
    fn serve_one_returns_when_the_frontend_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vu.sock");
        let mut listener = bind_listener(&path).unwrap();
        let device = VsockDevice::new(VsockConfig::new(3, dir.path().join("v.sock"))).unwrap();
        let server = std::thread::spawn(move || serve_one(device, &mut listener));
        drop(UnixStream::connect(&path).unwrap());
        server.join().unwrap().unwrap();
    }
}

//! virtio-fs (device id 26) as a vhost-user frontend: the file system is served by a
//! vhost-user backend process, `virtiofsd`, which maps guest memory and processes the
//! request queues itself.
//!
//! **Why a vhost-user frontend, not a FUSE server in this process**: virtiofsd is the
//! maintained, sandboxed (chroot or namespaces, seccomp) and well-tested virtio-fs
//! server — the one the QEMU pods already run (`hypervisor/backend/src/virtiofs.rs`).
//! Serving FUSE here would put a second, younger file server and all its host file
//! system access in the VMM. As a frontend, the VMM only sets the device up: the
//! guest's file traffic goes straight between guest memory and virtiofsd and never
//! touches the VMM.
//!
//! ```text
//! guest ─ QueueNotify(i) ──► KVM ioeventfd kick[i] ───────────────► virtiofsd
//!          (datamatch i)                                             │ rings in the
//! guest ◄─ irq ◄─ InterruptStatus|=VRING ◄─ device thread ◄─ call[i] ┘ shared memfd
//! ```
//!
//! - At build ([`VirtioFs::new`]): connect to the backend's socket, SET_OWNER,
//!   negotiate features ([`backend`]); start the device thread ([`event_loop`]).
//! - At DRIVER_OK: SET_FEATURES, SET_MEM_TABLE (the guest memory memfd), and for each
//!   ready queue SET_VRING_NUM/ADDR/BASE/KICK/CALL/ENABLE, ring addresses translated
//!   and checked ([`rings`]).
//! - The backend's used-buffer signals (call eventfds) cannot go to KVM's irqfd
//!   directly: the virtio-mmio driver reads InterruptStatus and ignores an interrupt
//!   without the VRING bit. The device thread sets that bit and raises the line.
//! - Reset: GET_VRING_BASE on each queue (the backend stops it), RESET_DEVICE (a new
//!   FUSE session); the device can be activated again.
//! - A backend that hangs up or fails is logged and counted, and the device reports
//!   DEVICE_NEEDS_RESET; it never panics. virtiofsd serves one connection only, so the
//!   device stays failed until the VM ends.
//! - Every exchange with the backend has a deadline ([`REPLY_DEADLINE`]): a backend
//!   that does not answer in time is hung up on by the device's watchdog thread
//!   ([`watchdog`]), which fails the build (an error naming the socket) or, at run
//!   time, the device, instead of blocking the thread waiting for the answer.

mod backend;
mod event_loop;
mod rings;
#[cfg(test)]
mod tests;
mod watchdog;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vhost::VringConfigData;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, take_queues, ActivateError, ActiveDevice, VirtioDevice, VirtioInterrupt,
};
use crate::api::error_chain;
use crate::config::SharedFsSpec;
use crate::devices::thread::DeviceThread;
use backend::Backend;

pub use backend::{BackendError, REPLY_DEADLINE};

/// The virtio device id of a file system device.
pub const VIRTIO_ID_FS: u32 = 26;
/// The longest tag (bytes); the config space holds it NUL-padded.
pub const TAG_MAX_LEN: usize = 36;
/// The high-priority queue (FORGET, INTERRUPT) and one request queue.
pub const NUM_QUEUES: usize = 2;
/// Request queues announced in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 1024;
const QUEUE_SIZES: [u16; NUM_QUEUES] = [QUEUE_SIZE; NUM_QUEUES];
/// `struct virtio_fs_config { u8 tag[36]; le32 num_request_queues; }`
const CONFIG_SIZE: usize = TAG_MAX_LEN + 4;
/// Ring features passed through when the backend has them too: the backend, not this
/// process, walks the rings.
const PASSTHROUGH_FEATURES: u64 =
    (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// Checks a virtio-fs tag: 1..=36 bytes, no NUL.
pub fn check_tag(tag: &str) -> Result<(), &'static str> {
    if tag.is_empty() {
        return Err("the tag is empty");
    }
    if tag.len() > TAG_MAX_LEN {
        return Err("the tag is longer than 36 bytes");
    }
    if tag.contains('\0') {
        return Err("the tag contains a NUL byte");
    }
    Ok(())
}

/// Why the device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("virtio-fs tag {tag:?}: {why}")]
    Tag { tag: String, why: &'static str },
    #[error("virtio-fs backend")]
    Backend(#[from] BackendError),
    #[error("virtio-fs {tag:?}: creating the call eventfds")]
    EventFd {
        tag: String,
        #[source]
        source: std::io::Error,
    },
    #[error("virtio-fs {tag:?}: starting the device thread")]
    Thread {
        tag: String,
        #[source]
        source: std::io::Error,
    },
}

/// The device's counters (the transport counts notifications and activations too).
#[derive(Debug, Default)]
pub struct FsMetrics {
    /// Successful activations (the backend took the queues).
    pub activations: AtomicU64,
    /// Resets of an active device (the backend stopped the queues).
    pub resets: AtomicU64,
    /// Failed vhost-user requests and backend hang-ups.
    pub backend_errors: AtomicU64,
    /// Used-buffer signals of the backend forwarded to the guest as interrupts.
    pub interrupts: AtomicU64,
    /// Failures to raise the interrupt.
    pub interrupt_errors: AtomicU64,
}

/// What the device and its thread share.
#[derive(Default)]
struct Shared {
    /// The driver's interrupt while the backend has the queues.
    interrupt: Mutex<Option<Arc<VirtioInterrupt>>>,
    /// The backend connection failed or hung up: nothing more can be sent on it.
    gone: AtomicBool,
}

impl Shared {
    fn interrupt(&self) -> MutexGuard<'_, Option<Arc<VirtioInterrupt>>> {
        self.interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that the backend is unusable; true the first time.
    fn mark_gone(&self) -> bool {
        !self.gone.swap(true, Ordering::SeqCst)
    }

    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// The virtio-fs device as the transport sees it.
pub struct VirtioFs {
    config: [u8; CONFIG_SIZE],
    backend: Backend,
    /// Offered to the driver: VERSION_1 and what the backend passes through.
    features: u64,
    /// Queue notifications: KVM ioeventfds on QueueNotify, written here as well when
    /// a notification exits to the VMM. The backend reads them.
    kicks: [EventFd; NUM_QUEUES],
    /// The backend's used-buffer signals; the device thread watches them.
    calls: [EventFd; NUM_QUEUES],
    /// Queues the backend was given at the last activation.
    started: Vec<usize>,
    shared: Arc<Shared>,
    metrics: Arc<FsMetrics>,
}

impl VirtioFs {
    /// Connects to the vhost-user backend at `spec.socket_path` (waiting a few seconds
    /// for it to listen), negotiates features and starts the device thread, which
    /// forwards the backend's interrupts and hangs up on the backend when it ends.
    /// `kicks[i]` is queue `i`'s notification: register it as the ioeventfd of the
    /// transport's QueueNotify register with datamatch `i`;
    /// [`VirtioDevice::queue_notify`] writes it too.
    pub fn new(
        spec: &SharedFsSpec,
        kicks: [EventFd; NUM_QUEUES],
    ) -> Result<(VirtioFs, DeviceThread), FsError> {
        VirtioFs::with_deadline(spec, kicks, REPLY_DEADLINE)
    }

    /// [`VirtioFs::new`], each exchange with the backend (now and later) limited to
    /// `deadline` rather than [`REPLY_DEADLINE`].
    pub fn with_deadline(
        spec: &SharedFsSpec,
        kicks: [EventFd; NUM_QUEUES],
        deadline: Duration,
    ) -> Result<(VirtioFs, DeviceThread), FsError> {
        check_tag(&spec.tag).map_err(|why| FsError::Tag {
            tag: spec.tag.clone(),
            why,
        })?;
        let mut config = [0u8; CONFIG_SIZE];
        config[..spec.tag.len()].copy_from_slice(spec.tag.as_bytes());
        config[TAG_MAX_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        let eventfd_err = |source| FsError::EventFd {
            tag: spec.tag.clone(),
            source,
        };
        let new_call = || EventFd::new(libc::EFD_NONBLOCK).map_err(eventfd_err);
        let calls = [new_call()?, new_call()?];
        let (backend, socket) = Backend::connect(&spec.socket_path, NUM_QUEUES, deadline)?;
        let features = (1 << VIRTIO_F_VERSION_1) | (backend.features() & PASSTHROUGH_FEATURES);
        let shared = Arc::<Shared>::default();
        let metrics = Arc::<FsMetrics>::default();
        let watched = calls
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(eventfd_err)?;
        let handler = event_loop::EventLoop::new(
            watched,
            socket,
            spec.socket_path.clone(),
            shared.clone(),
            metrics.clone(),
        );
        let thread =
            DeviceThread::spawn("virtio-fs", move |stop| handler.run(stop)).map_err(|source| {
                FsError::Thread {
                    tag: spec.tag.clone(),
                    source,
                }
            })?;
        let fs = VirtioFs {
            config,
            backend,
            features,
            kicks,
            calls,
            started: Vec::new(),
            shared,
            metrics,
        };
        Ok((fs, thread))
    }

    pub fn metrics(&self) -> Arc<FsMetrics> {
        self.metrics.clone()
    }

    /// Counts a failed backend request; the connection is unusable from now on.
    fn backend_failed(&mut self, error: &BackendError) {
        self.metrics.backend_errors.fetch_add(1, Ordering::Relaxed);
        if self.shared.mark_gone() {
            tracing::error!(
                error = %error_chain(error),
                "virtio-fs backend failed; the device needs a reset"
            );
        }
        self.backend.hang_up();
    }

    /// Hands the driver's queues (`rings`: index, addresses, next available index)
    /// in `mem` to the backend, with the features the driver acked.
    fn start(
        &mut self,
        mem: &GuestMemoryMmap,
        acked_features: u64,
        rings: &[(usize, VringConfigData, u16)],
    ) -> Result<(), BackendError> {
        if self.shared.is_gone() {
            return Err(BackendError::Gone {
                path: self.backend.path().to_owned(),
            });
        }
        let acked = acked_features & self.features;
        self.backend.set_features(acked)?;
        self.backend.set_mem_table(mem)?;
        for (index, ring, next_avail) in rings {
            self.started.push(*index);
            self.backend.start_vring(
                *index,
                ring,
                *next_avail,
                &self.kicks[*index],
                &self.calls[*index],
            )?;
        }
        Ok(())
    }
}

impl VirtioDevice for VirtioFs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError> {
        // None must be ready: the backend gets the ready ones.
        let queues: [Queue; NUM_QUEUES] = take_queues(active.queues, &[])?;
        // Every ready queue's rings are checked before the backend hears of any.
        let mut rings = Vec::with_capacity(NUM_QUEUES);
        for (index, queue) in queues.iter().enumerate() {
            if queue.ready() {
                let ring =
                    rings::vring_config(queue, &active.mem).map_err(|e| ActivateError::Ring {
                        index,
                        why: e.to_string(),
                    })?;
                rings.push((index, ring, queue.next_avail()));
            }
        }
        // Installed first: the backend may signal as soon as it has a queue (kicks
        // that came before DRIVER_OK are waiting in the eventfds).
        *self.shared.interrupt() = Some(active.interrupt.clone());
        self.started.clear();
        match self.start(&active.mem, active.acked_features, &rings) {
            Ok(()) => {
                self.metrics.activations.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                self.shared.interrupt().take();
                if !matches!(error, BackendError::Gone { .. }) {
                    self.backend_failed(&error);
                }
                self.started.clear();
                Err(ActivateError::Backend(error_chain(&error)))
            }
        }
    }

    fn queue_notify(&mut self, index: u16) {
        // Reached only where KVM took no ioeventfd for this queue's notification.
        if let Some(kick) = self.kicks.get(usize::from(index)) {
            // Only an overflowing counter fails, and then the backend is awake anyway.
            let _ = kick.write(1);
        }
    }

    fn reset(&mut self) {
        self.shared.interrupt().take();
        self.metrics.resets.fetch_add(1, Ordering::Relaxed);
        if self.shared.is_gone() {
            return;
        }
        let started = std::mem::take(&mut self.started);
        if let Err(error) = self.backend.stop(&started) {
            self.backend_failed(&error);
        }
    }
}

//! virtio-rng (entropy device): fills the driver's writable buffers from the host's
//! /dev/urandom.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::queue::{check_chain, ChainLimits};
use super::{
    read_config_bytes, take_queues, ActivateError, ActiveDevice, VirtioDevice, VirtioInterrupt,
};

/// The single request queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per descriptor chain.
pub const MAX_BYTES_PER_CHAIN: u32 = 64 * 1024;
/// Most descriptors in one chain: no chain of the queue is longer without indirect
/// descriptors, which this device does not offer (chains through one are refused).
pub const MAX_CHAIN_DESCRIPTORS: usize = QUEUE_SIZE as usize;

/// Counters for the entropy device.
#[derive(Debug, Default)]
pub struct RngMetrics {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Read-only descriptors, buffers outside guest memory, chains through an
    /// indirect table (not offered) or too long.
    pub bad_descriptors: AtomicU64,
    /// Failures to read entropy, update the used ring or raise the interrupt.
    pub errors: AtomicU64,
}

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<VirtioInterrupt>,
    chains: ChainLimits,
}

/// The entropy device.
pub struct Rng {
    source: File,
    active: Option<Active>,
    metrics: Arc<RngMetrics>,
}

impl Rng {
    /// Opens the entropy source now, so the device needs no file access later.
    pub fn new() -> io::Result<Rng> {
        Ok(Rng {
            source: File::open("/dev/urandom")?,
            active: None,
            metrics: Arc::default(),
        })
    }

    pub fn metrics(&self) -> Arc<RngMetrics> {
        self.metrics.clone()
    }

    /// Serves every available chain, then signals the driver if it wants to know.
    fn process(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let metrics = &self.metrics;
        let mut served = false;
        while let Some(chain) = active.queue.pop_descriptor_chain(&active.mem) {
            let head = chain.head_index();
            let mut written = 0u32;
            let chain = match check_chain(&active.queue, &chain, active.chains) {
                Ok(()) => Some(chain),
                Err(_) => {
                    metrics.bad_descriptors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            for desc in chain.into_iter().flatten() {
                if !desc.is_write_only() {
                    metrics.bad_descriptors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let want = desc.len().min(MAX_BYTES_PER_CHAIN - written);
                match fill(&mut self.source, &active.mem, desc.addr(), want) {
                    Ok(()) => written += want,
                    Err(FillError::Memory) => {
                        metrics.bad_descriptors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(FillError::Source) => {
                        metrics.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                if written == MAX_BYTES_PER_CHAIN {
                    break;
                }
            }
            metrics.requests.fetch_add(1, Ordering::Relaxed);
            metrics
                .bytes
                .fetch_add(u64::from(written), Ordering::Relaxed);
            if active.queue.add_used(&active.mem, head, written).is_err() {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            served = true;
        }
        let notify = active.queue.needs_notification(&active.mem).unwrap_or(true);
        if served && notify && active.interrupt.signal_used_queue().is_err() {
            metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum FillError {
    Memory,
    Source,
}

/// Writes `len` random bytes at `addr`.
fn fill(
    source: &mut File,
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: u32,
) -> Result<(), FillError> {
    let mut buf = [0u8; 256];
    let mut done = 0u64;
    while done < u64::from(len) {
        let n = (u64::from(len) - done).min(buf.len() as u64) as usize;
        source
            .read_exact(&mut buf[..n])
            .map_err(|_| FillError::Source)?;
        let at = addr.0.checked_add(done).ok_or(FillError::Memory)?;
        mem.write_slice(&buf[..n], GuestAddress(at))
            .map_err(|_| FillError::Memory)?;
        done += n as u64;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // No config space: every byte reads as zero.
        read_config_bytes(&[], offset, data);
    }

    fn activate(&mut self, active: ActiveDevice) -> Result<(), ActivateError> {
        let [queue] = take_queues(active.queues, &[0])?;
        self.active = Some(Active {
            mem: active.mem,
            queue,
            interrupt: active.interrupt,
            chains: ChainLimits::negotiated(MAX_CHAIN_DESCRIPTORS, active.acked_features),
        });
        Ok(())
    }

    fn queue_notify(&mut self, _index: u16) {
        self.process();
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
#[path = "rng_tests.rs"]
mod tests;

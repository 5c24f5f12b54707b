//! Serving the request queue: each descriptor chain becomes one request, read with
//! virtio-queue's `Reader`/`Writer` whatever its shape, checked, carried out on the
//! disk through one bounded bounce buffer, and answered with its status byte.
//!
//! Host memory per request stays small whatever the guest sends: chains longer than
//! the queue, or through an indirect table (not offered), are dropped before anything
//! is collected from them, data moves in
//! bounce-buffer-sized pieces, and a request carries at most [`MAX_REQUEST_BYTES`].

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::disk::Disk;
use super::request::{parse, Header, Limits, Op, Refusal, Status, HEADER_SIZE};
use super::{BlockMetrics, MAX_REQUEST_BYTES, QUEUE_SIZE};
use crate::devices::virtio::queue::{check_chain, ChainLimits};

/// The bounce buffer between guest memory and the file.
pub const BOUNCE_SIZE: usize = 128 * 1024;
/// Most chains served before the queue's lock is let go (and taken again).
pub const BATCH: usize = QUEUE_SIZE as usize;
/// Longest chain accepted: no chain of a queue of [`QUEUE_SIZE`] is longer without
/// indirect descriptors, which this device does not offer.
pub const MAX_DESCRIPTORS: usize = QUEUE_SIZE as usize;

/// The driver broke its rings (an available index out of range, rings no longer in
/// memory): the queue is unusable until the driver resets the device.
#[derive(Debug, thiserror::Error)]
#[error("request queue unusable")]
pub struct QueueFault(#[source] pub virtio_queue::Error);

/// What one pass over the queue did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processed {
    /// Chains returned to the used ring.
    pub served: usize,
    /// The driver wants an interrupt for them.
    pub notify: bool,
    /// The pass stopped early (batch done or asked to yield); chains may be waiting.
    pub more: bool,
}

/// Carries out requests on one disk.
pub struct Worker {
    disk: Disk,
    bounce: Box<[u8]>,
    limits: Limits,
    metrics: Arc<BlockMetrics>,
}

/// Counts one more.
fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Worker {
    pub fn new(disk: Disk, metrics: Arc<BlockMetrics>) -> Worker {
        let limits = Limits {
            capacity: disk.capacity(),
            read_only: disk.read_only(),
            max_data: MAX_REQUEST_BYTES,
        };
        Worker {
            disk,
            bounce: vec![0u8; BOUNCE_SIZE].into_boxed_slice(),
            limits,
            metrics,
        }
    }

    /// Serves the available chains (each within `limits`), at most [`BATCH`] of them,
    /// stopping early when `yield_now` says so; then tells whether the driver wants an
    /// interrupt. Notifications stay suppressed while the pass runs (EVENT_IDX or not).
    pub fn process_queue(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        limits: ChainLimits,
        yield_now: &dyn Fn() -> bool,
    ) -> Result<Processed, QueueFault> {
        let mut done = Processed::default();
        let mut popped = 0;
        'pass: loop {
            queue.disable_notification(mem).map_err(QueueFault)?;
            loop {
                if popped >= BATCH || yield_now() {
                    done.more = true;
                    break 'pass;
                }
                let chain = queue.iter(mem).map_err(QueueFault)?.next();
                let Some(chain) = chain else {
                    break;
                };
                popped += 1;
                let head = chain.head_index();
                let len = match check_chain(queue, &chain, limits) {
                    Ok(()) => self.serve(mem, chain),
                    Err(_) => {
                        inc(&self.metrics.requests);
                        self.drop_chain()
                    }
                };
                if head >= queue.size() {
                    // Nothing to return it as: the driver's mistake, not the ring's.
                    continue;
                }
                queue.add_used(mem, head, len).map_err(QueueFault)?;
                done.served += 1;
            }
            // Chains that came in while notifications were off are served now.
            if !queue.enable_notification(mem).map_err(QueueFault)? {
                break;
            }
        }
        done.notify = done.served > 0 && queue.needs_notification(mem).map_err(QueueFault)?;
        Ok(done)
    }

    /// Serves one chain (checked against the chain limits); returns the used length
    /// (bytes written to the guest).
    fn serve(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        inc(&self.metrics.requests);
        let Ok(mut data_out) = Writer::new(mem, chain.clone()) else {
            return self.drop_chain();
        };
        // The status is the last device-writable byte.
        let Some(data_len) = data_out.available_bytes().checked_sub(1) else {
            return self.drop_chain();
        };
        let Ok(mut status_out) = data_out.split_at(data_len) else {
            return self.drop_chain();
        };
        let status = match Reader::new(mem, chain) {
            Ok(mut data_in) => self.execute(&mut data_in, &mut data_out),
            Err(_) => {
                inc(&self.metrics.bad_requests);
                Status::IoErr
            }
        };
        if status_out.write_all(&[status.byte()]).is_err() {
            // The byte was there when the chain was parsed: cannot happen.
            return self.drop_chain();
        }
        u32::try_from(data_out.bytes_written() + 1).unwrap_or(u32::MAX)
    }

    /// A chain refused or with no room for a status: counted, returned with nothing
    /// written.
    fn drop_chain(&self) -> u32 {
        inc(&self.metrics.bad_requests);
        0
    }

    /// Reads the header from `data_in`, checks the request and carries it out.
    fn execute(&mut self, data_in: &mut Reader<'_>, data_out: &mut Writer<'_>) -> Status {
        let mut raw = [0u8; HEADER_SIZE];
        if data_in.read_exact(&mut raw).is_err() {
            inc(&self.metrics.bad_requests);
            return Status::IoErr;
        }
        let header = Header::from_bytes(&raw);
        let readable = data_in.available_bytes() as u64;
        let writable = data_out.available_bytes() as u64;
        let op = match parse(header, readable, writable, self.limits) {
            Ok(op) => op,
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::Unsupported(_) => &self.metrics.unsupported,
                    _ => &self.metrics.bad_requests,
                };
                if counter.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%refusal, disk = %self.disk.path().display(), "virtio-blk request refused");
                }
                return refusal.status();
            }
        };
        let result = match op {
            Op::Read { offset, len } => self.read(offset, len, data_out),
            Op::Write { offset, len } => self.write(offset, len, data_in),
            Op::Flush => {
                inc(&self.metrics.flushes);
                self.disk.flush().map_err(Failure::Host)
            }
            Op::GetId { len } => {
                let n = self.disk.serial().len().min(len as usize);
                data_out
                    .write_all(&self.disk.serial()[..n])
                    .map_err(|_| Failure::Guest)
            }
        };
        match result {
            Ok(()) => Status::Ok,
            Err(Failure::Host(error)) => {
                if self.metrics.io_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%error, disk = %self.disk.path().display(), "virtio-blk I/O failed");
                }
                Status::IoErr
            }
            Err(Failure::Guest) => {
                inc(&self.metrics.bad_requests);
                Status::IoErr
            }
        }
    }

    /// Disk → guest, one bounce buffer at a time.
    fn read(&mut self, offset: u64, len: u64, data_out: &mut Writer<'_>) -> Result<(), Failure> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE_SIZE as u64) as usize;
            let buf = &mut self.bounce[..n];
            self.disk
                .read_at(buf, offset + done)
                .map_err(Failure::Host)?;
            data_out.write_all(buf).map_err(|_| Failure::Guest)?;
            done += n as u64;
            self.metrics
                .read_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Guest → disk, one bounce buffer at a time.
    fn write(&mut self, offset: u64, len: u64, data_in: &mut Reader<'_>) -> Result<(), Failure> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE_SIZE as u64) as usize;
            let buf = &mut self.bounce[..n];
            data_in.read_exact(buf).map_err(|_| Failure::Guest)?;
            self.disk
                .write_at(buf, offset + done)
                .map_err(Failure::Host)?;
            done += n as u64;
            self.metrics
                .write_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Why a checked request still failed.
enum Failure {
    /// The file refused (counted in `io_errors`).
    Host(std::io::Error),
    /// The guest's buffers did not hold what they claimed (counted in `bad_requests`).
    Guest,
}

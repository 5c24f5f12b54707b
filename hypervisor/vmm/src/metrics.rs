//! The VM's metrics: boot time, vCPU exits by reason, and each device's counters, read
//! from the live atomics at any moment ([`MetricsSource::snapshot`]) as JSON. The
//! `cocoon-vmm` binary writes them to `--metrics <path>` periodically and at the end.

use crate::devices::virtio::block::BlockMetrics;
use crate::devices::virtio::fs::FsMetrics;
use crate::devices::virtio::mmio::MmioMetrics;
use crate::devices::virtio::net::NetMetrics;
use crate::devices::virtio::rng::RngMetrics;
use crate::devices::virtio::vsock::VsockGlueMetrics;
use crate::vstate::vcpu::VcpuMetrics;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// One virtio device's counters.
#[derive(Clone)]
pub enum DeviceMetrics {
    Rng {
        transport: Arc<MmioMetrics>,
        device: Arc<RngMetrics>,
    },
    Vsock {
        transport: Arc<MmioMetrics>,
        glue: Arc<VsockGlueMetrics>,
        device: Arc<cocoon_vsock::Metrics>,
    },
    Block {
        transport: Arc<MmioMetrics>,
        device: Arc<BlockMetrics>,
    },
    Fs {
        transport: Arc<MmioMetrics>,
        device: Arc<FsMetrics>,
    },
    Net {
        transport: Arc<MmioMetrics>,
        device: Arc<NetMetrics>,
        /// The host tap interface.
        tap: String,
    },
}

/// Everything the metrics are read from; cheap to clone, safe to read from any thread.
#[derive(Clone)]
pub struct MetricsSource {
    pub(crate) created: Instant,
    pub(crate) first_exit: Arc<OnceLock<Instant>>,
    pub(crate) vcpus: Vec<Arc<VcpuMetrics>>,
    pub(crate) devices: Vec<DeviceMetrics>,
}

fn n(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

fn transport(t: &MmioMetrics) -> Value {
    json!({
        "invalid_access": n(&t.invalid_access),
        "refused_write": n(&t.refused_write),
        "notify": n(&t.notify),
        "activations": n(&t.activations),
        "activate_failures": n(&t.activate_failures),
    })
}

impl MetricsSource {
    /// The counters now.
    pub fn snapshot(&self) -> Value {
        let vcpus: Vec<Value> = self
            .vcpus
            .iter()
            .map(|m| {
                json!({
                    "exits": n(&m.exits),
                    "pio": n(&m.pio),
                    "mmio": n(&m.mmio),
                    "unhandled": n(&m.unhandled),
                })
            })
            .collect();
        let sum = |k: &str| {
            vcpus
                .iter()
                .map(|v| v[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let exits = json!({
            "total": sum("exits"), "pio": sum("pio"), "mmio": sum("mmio"), "unhandled": sum("unhandled"),
        });
        let devices: Vec<Value> = self
            .devices
            .iter()
            .map(|d| match d {
                DeviceMetrics::Rng {
                    transport: t,
                    device,
                } => json!({
                    "type": "rng",
                    "transport": transport(t),
                    "requests": n(&device.requests),
                    "bytes": n(&device.bytes),
                    "bad_descriptors": n(&device.bad_descriptors),
                    "errors": n(&device.errors),
                }),
                DeviceMetrics::Vsock {
                    transport: t,
                    glue,
                    device,
                } => {
                    let s = device.snapshot();
                    json!({
                        "type": "vsock",
                        "transport": transport(t),
                        "wakeups": n(&glue.wakeups),
                        "queue_errors": n(&glue.queue_errors),
                        "host_errors": n(&glue.host_errors),
                        "interrupt_errors": n(&glue.interrupt_errors),
                        "tx_packets": s.tx_packets,
                        "tx_bytes": s.tx_bytes,
                        "rx_packets": s.rx_packets,
                        "rx_bytes": s.rx_bytes,
                        "conns_opened": s.conns_opened,
                        "conns_reset": s.conns_reset,
                        "conns_closed": s.conns_closed,
                        "control_dropped": s.control_dropped,
                        "protocol_violations": s.protocol_violations,
                        "bad_descriptors": s.bad_descriptors,
                    })
                }
                DeviceMetrics::Block {
                    transport: t,
                    device,
                } => json!({
                    "type": "block",
                    "transport": transport(t),
                    "requests": n(&device.requests),
                    "read_bytes": n(&device.read_bytes),
                    "write_bytes": n(&device.write_bytes),
                    "flushes": n(&device.flushes),
                    "bad_requests": n(&device.bad_requests),
                    "io_errors": n(&device.io_errors),
                    "unsupported": n(&device.unsupported),
                    "queue_errors": n(&device.queue_errors),
                    "interrupt_errors": n(&device.interrupt_errors),
                }),
                DeviceMetrics::Fs {
                    transport: t,
                    device,
                } => json!({
                    "type": "fs",
                    "transport": transport(t),
                    "activations": n(&device.activations),
                    "resets": n(&device.resets),
                    "backend_errors": n(&device.backend_errors),
                    "interrupts": n(&device.interrupts),
                    "interrupt_errors": n(&device.interrupt_errors),
                }),
                DeviceMetrics::Net {
                    transport: t,
                    device: d,
                    tap,
                } => json!({
                    "type": "net",
                    "tap": tap,
                    "transport": transport(t),
                    "tx_packets": n(&d.tx_packets),
                    "tx_bytes": n(&d.tx_bytes),
                    "rx_packets": n(&d.rx_packets),
                    "rx_bytes": n(&d.rx_bytes),
                    "tx_dropped": n(&d.tx_dropped),
                    "rx_dropped": n(&d.rx_dropped),
                    "bad_descriptors": n(&d.bad_descriptors),
                    "tap_errors": n(&d.tap_errors),
                    "queue_errors": n(&d.queue_errors),
                    "interrupt_errors": n(&d.interrupt_errors),
                    "wakeups": n(&d.wakeups),
                }),
            })
            .collect();
        let first_exit_us = self
            .first_exit
            .get()
            .map(|t| t.saturating_duration_since(self.created).as_micros() as u64);
        json!({
            "boot": {
                "first_guest_exit_us": first_exit_us,
                "uptime_ms": self.created.elapsed().as_millis() as u64,
            },
            "exits": exits,
            "vcpus": vcpus,
            "devices": devices,
        })
    }

    /// Writes the snapshot (plus `extra` fields) to `path` atomically: a reader never
    /// sees half a file.
    pub fn write(&self, path: &Path, extra: &[(&str, Value)]) -> std::io::Result<()> {
        let mut v = self.snapshot();
        for (k, x) in extra {
            v[*k] = x.clone();
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(v.to_string().as_bytes())?;
        f.write_all(b"\n")?;
        std::fs::rename(&tmp, path)
    }
}

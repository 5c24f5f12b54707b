//! What the store hands out about an image.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `sha256:<hex>`, the digest of the image config.
    pub id: String,
    /// Normalized `registry/repository:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:<manifest or index digest>` names it was pulled by.
    pub repo_digests: Vec<String>,
    /// Compressed size of the layers, in bytes.
    pub size: u64,
    pub config: ImageConfig,
    /// The flattened root filesystem (read-only by convention: containers get an
    /// overlay on it).
    pub rootfs: PathBuf,
    /// When it was pulled or imported (first time), in ns since the Unix epoch.
    pub pulled_at_unix_ns: u64,
}

/// The runtime defaults from the image config (`config` of the OCI image config, the
/// `config` of Docker's). Empty means unset, as in the config itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// `port/proto`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub stop_signal: String,
}

impl ImageConfig {
    pub(crate) fn from_oci(c: Option<&oci_spec::image::Config>) -> ImageConfig {
        let Some(c) = c else {
            return ImageConfig::default();
        };
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        ImageConfig {
            user: text(c.user()),
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            working_dir: text(c.working_dir()),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            exposed_ports: sorted(c.exposed_ports().clone().unwrap_or_default()),
            volumes: sorted(c.volumes().clone().unwrap_or_default()),
            stop_signal: text(c.stop_signal()),
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Bytes and inodes used under the store root, for CRI `ImageFsInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    pub root: PathBuf,
    /// Allocated bytes (`st_blocks * 512`), hardlinked files counted once.
    pub bytes: u64,
    pub inodes: u64,
}

/// Counters of registry traffic, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Pulls that went to a registry (coalesced callers are not counted twice).
    pub pulls: u64,
    /// Blobs (configs and layers) downloaded.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
}

pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

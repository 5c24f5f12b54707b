//! Unpacking an image's layers, in order, into one flattened rootfs directory.
//!
//! Each layer is decompressed ([`compression`]), its uncompressed bytes hashed against
//! the config's `diff_id`, and its entries applied by [`apply`]: whiteouts and opaque
//! directories ([`whiteout`]) remove what lower layers made, and every path is resolved
//! inside the rootfs ([`safe_path`]). Modes, owners, mtimes, symlinks, hardlinks,
//! fifos and (as root) device nodes are kept; extended attributes are not.

mod apply;
pub(crate) mod compression;
mod safe_path;
mod whiteout;

pub(crate) use apply::UnpackStats;
pub(crate) use compression::Compression;

use crate::error::{ImageError, IoContext, Result};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One layer blob to apply.
#[derive(Debug, Clone)]
pub(crate) struct LayerFile {
    pub path: PathBuf,
    /// The blob digest, naming the layer in errors.
    pub digest: String,
    /// From the media type; `None`: sniff.
    pub compression: Option<Compression>,
    /// The digest of the uncompressed tar, from the image config, when known.
    pub diff_id: Option<String>,
}

/// Applies `layers` in order onto the (empty) directory `target`, then flushes the
/// filesystem. Blocking; `max_file_bytes` caps the total file content written.
pub(crate) fn unpack_layers(
    layers: &[LayerFile],
    target: &Path,
    max_file_bytes: u64,
) -> Result<UnpackStats> {
    let started = std::time::Instant::now();
    let mut applier = apply::Applier::new(target, max_file_bytes);
    for layer in layers {
        let what = format!("layer {}", layer.digest);
        let file = std::fs::File::open(&layer.path).ctx("open", &layer.path)?;
        let tar = compression::decompressed(file, layer.compression)
            .map_err(|e| ImageError::format(&what, e))?;
        let mut hashing = HashingReader {
            inner: tar,
            hasher: Sha256::new(),
        };
        hashing = applier.apply_layer(hashing, &what)?;
        // The end-of-archive blocks and padding count for the diff_id too.
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| ImageError::format(&what, e))?;
        let actual = format!("sha256:{:x}", hashing.hasher.finalize());
        if let Some(expected) = &layer.diff_id {
            if *expected != actual {
                return Err(ImageError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
    }
    let stats = applier.finish()?;
    let dir = std::fs::File::open(target).ctx("open", target)?;
    nix::unistd::syncfs(&dir).map_err(|e| ImageError::io("syncfs", target, e.into()))?;
    tracing::debug!(
        target = %target.display(),
        layers = layers.len(),
        entries = stats.entries,
        file_bytes = stats.file_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "unpacked"
    );
    Ok(stats)
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;

//! What a pull and an import share once the manifest is known: fetch the config and
//! layers into the blob store (verified), unpack the rootfs once per image, and commit
//! the image to the index.

use crate::blob::BlobStore;
use crate::error::{ImageError, IoContext, Result};
use crate::image::{now_unix_ns, Image};
use crate::index::ImageRecord;
use crate::layout_import::Layout;
use crate::manifest::{parse_config, BlobRef, ImagePlan, CONFIG_LIMIT, MANIFEST_LIMIT};
use crate::reference::ImageRef;
use crate::registry::Remote;
use crate::store::ImageStore;
use crate::unpack::{unpack_layers, LayerFile};
use futures::{StreamExt, TryStreamExt};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Layers fetched at once.
const PARALLEL_FETCHES: usize = 3;

/// Where blobs come from.
pub(crate) enum Source<'a> {
    /// A registry (or its mirrors), the endpoint that served the manifest first.
    Registry { remote: &'a Remote, endpoint: usize },
    /// An OCI image layout directory.
    Layout(&'a Layout),
}

impl Source<'_> {
    async fn blob(&self, blob: &BlobRef, blobs: &BlobStore, limit: u64) -> Result<u64> {
        match self {
            Source::Registry { remote, endpoint } => {
                remote.blob(*endpoint, blob, blobs, limit).await
            }
            Source::Layout(layout) => layout.copy_blob(blob, blobs, limit).await,
        }
    }
}

/// A manifest, resolved: the documents fetched on the way (top first, each with its
/// verified digest) and what the image manifest names.
pub(crate) struct Resolved {
    pub documents: Vec<(String, Vec<u8>)>,
    pub plan: ImagePlan,
}

impl ImageStore {
    /// Fetches, unpacks and commits the image `resolved` describes under the name `r`.
    pub(crate) async fn install(
        &self,
        source: Source<'_>,
        r: &ImageRef,
        resolved: Resolved,
    ) -> Result<Image> {
        let Resolved { documents, plan } = resolved;
        let Some(top_digest) = documents.first().map(|(d, _)| d.clone()) else {
            return Err(ImageError::format(r.to_string(), "no manifest"));
        };
        let id = plan.config.digest.clone();
        let mut all: Vec<String> = documents.iter().map(|(d, _)| d.clone()).collect();
        for b in plan.blobs() {
            if !all.contains(&b.digest) {
                all.push(b.digest.clone());
            }
        }
        let _pins = self.pin(all.clone());

        let blobs = &self.inner.blobs;
        for (digest, bytes) in &documents {
            if !blobs.contains(digest) {
                blobs.put(digest, bytes, MANIFEST_LIMIT).await?;
            }
        }
        self.fetch(&source, &plan.config, CONFIG_LIMIT).await?;
        let config_path = blobs.path(&id);
        let config_bytes = tokio::fs::read(&config_path)
            .await
            .ctx("read", &config_path)?;
        let config = parse_config(
            &config_bytes,
            &format!("config {id} of {r}"),
            plan.layers.len(),
        )?;

        let mut unique: Vec<&BlobRef> = Vec::new();
        for l in &plan.layers {
            if !unique.iter().any(|u| u.digest == l.digest) {
                unique.push(l);
            }
        }
        let limit = self.inner.limits.max_layer_bytes;
        let fetches: Vec<_> = unique
            .into_iter()
            .map(|l| self.fetch(&source, l, limit))
            .collect();
        futures::stream::iter(fetches)
            .buffer_unordered(PARALLEL_FETCHES)
            .try_collect::<Vec<()>>()
            .await?;

        let layers: Vec<LayerFile> = plan
            .layers
            .iter()
            .zip(&config.diff_ids)
            .map(|(l, diff_id)| LayerFile {
                path: blobs.path(&l.digest),
                digest: l.digest.clone(),
                compression: l.compression(),
                diff_id: Some(diff_id.clone()),
            })
            .collect();
        self.ensure_rootfs(&id, layers).await?;

        let record = ImageRecord {
            id,
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            size: plan.size(),
            config: config.config,
            blobs: all,
            pulled_at_unix_ns: now_unix_ns(),
        };
        self.commit(record, r.repo_tag(), Some(r.repo_digest(&top_digest)))
    }

    /// Fetches `blob` unless the store has it.
    async fn fetch(&self, source: &Source<'_>, blob: &BlobRef, limit: u64) -> Result<()> {
        if self.inner.blobs.contains(&blob.digest) {
            return Ok(());
        }
        let n = source.blob(blob, &self.inner.blobs, limit).await?;
        if let Source::Registry { .. } = source {
            self.inner.blobs_fetched.fetch_add(1, Ordering::Relaxed);
            self.inner.bytes_fetched.fetch_add(n, Ordering::Relaxed);
        }
        tracing::debug!(blob = %blob.digest, bytes = n, "blob stored");
        Ok(())
    }

    /// Unpacks the rootfs of image `id` unless it is there (the id is pinned, so one
    /// that is there stays).
    async fn ensure_rootfs(&self, id: &str, layers: Vec<LayerFile>) -> Result<()> {
        let dest = self.rootfs_path(id);
        if dest.is_dir() {
            return Ok(());
        }
        let tmp_dir = self.inner.tmp_dir.clone();
        let max = self.inner.limits.max_unpacked_bytes;
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || unpack_into(&layers, &tmp_dir, &dest, max))
            .await
            .map_err(|e| {
                ImageError::format(format!("image {id}"), format!("unpack task failed: {e}"))
            })?
    }
}

/// Unpacks into a fresh temp dir under `tmp_dir` and renames it to `dest` when complete;
/// on failure the temp dir is removed.
fn unpack_into(layers: &[LayerFile], tmp_dir: &Path, dest: &Path, max: u64) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(tmp_dir)
        .ctx("create a temp dir in", tmp_dir)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .ctx("chmod", tmp.path())?;
    unpack_layers(layers, tmp.path(), max)?;
    match std::fs::rename(tmp.path(), dest) {
        Ok(()) => {
            let _ = tmp.keep();
        }
        // Another pull of the same image got there first; ours goes with `tmp`.
        Err(_) if dest.is_dir() => return Ok(()),
        Err(e) => return Err(ImageError::io("rename an unpacked rootfs to", dest, e)),
    }
    if let Some(parent) = dest.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .ctx("fsync", parent)?;
    }
    Ok(())
}

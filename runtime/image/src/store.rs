//! The image store: the index in memory behind one mutex, the files under the root.
//!
//! Locking: `state` (index + blob pins) is held for index reads and changes and for the
//! few renames and unlinks that must agree with them, never across an `.await` or an
//! unpack. Pulls *pin* every blob digest they use (the config digest, which is also the
//! image id, pins the rootfs): `remove` leaves pinned files alone, so a pull that found
//! a blob or rootfs present can rely on it until it commits.

use crate::blob::BlobStore;
use crate::error::{ImageError, IoContext, Result};
use crate::image::{FsUsage, Image, PullStats};
use crate::index::{Found, ImageRecord, Index};
use crate::reference::digest_hex;
use crate::registry_config::RegistriesConfig;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Limits on untrusted content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// The largest (compressed) layer accepted; default 8 GiB.
    pub max_layer_bytes: u64,
    /// The most file content one image may unpack to; default 64 GiB.
    pub max_unpacked_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_layer_bytes: 8 << 30,
            max_unpacked_bytes: 64 << 30,
        }
    }
}

/// Images pulled from registries or imported from OCI layouts, unpacked into one
/// flattened rootfs each. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub index_path: PathBuf,
    pub rootfs_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub blobs: BlobStore,
    pub registries: RegistriesConfig,
    pub limits: StoreLimits,
    state: Mutex<State>,
    /// Pulls in flight by normalized reference; later callers await the same result.
    pub inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, Result<Image>>>>>,
    pub pulls: AtomicU64,
    pub blobs_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
}

struct State {
    index: Index,
    /// Digest → number of pulls using it.
    pins: HashMap<String, usize>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating if need be) the store at `root` with the default limits.
    pub fn open(root: &Path, registries: RegistriesConfig) -> Result<ImageStore> {
        Self::open_with_limits(root, registries, StoreLimits::default())
    }

    /// Opens the store at `root`: checks `registries`, removes what a crash left half
    /// written (temp files and dirs, rootfs dirs and blobs no image references), and
    /// loads the index.
    pub fn open_with_limits(
        root: &Path,
        registries: RegistriesConfig,
        limits: StoreLimits,
    ) -> Result<ImageStore> {
        registries
            .validate()
            .map_err(|e| ImageError::format("registries", e))?;
        let blob_dir = root.join("blobs").join("sha256");
        let rootfs_dir = root.join("rootfs");
        let tmp_dir = root.join("tmp");
        for d in [root, &blob_dir, &rootfs_dir, &tmp_dir] {
            std::fs::create_dir_all(d).ctx("create", d)?;
        }
        clear_dir(&tmp_dir)?;
        let index_path = root.join("index.json");
        let mut index = Index::load(&index_path)?;
        let changed = reconcile(&mut index, &rootfs_dir, &blob_dir)?;
        if changed {
            index.save(&index_path)?;
        }
        tracing::info!(root = %root.display(), images = index.images.len(), "image store open");
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                index_path,
                rootfs_dir,
                blobs: BlobStore::new(blob_dir, tmp_dir.clone()),
                tmp_dir,
                registries,
                limits,
                state: Mutex::new(State {
                    index,
                    pins: HashMap::new(),
                }),
                inflight: Mutex::new(HashMap::new()),
                pulls: AtomicU64::new(0),
                blobs_fetched: AtomicU64::new(0),
                bytes_fetched: AtomicU64::new(0),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn rootfs_path(&self, id: &str) -> PathBuf {
        self.inner.rootfs_dir.join(digest_hex(id))
    }

    fn image(&self, r: &ImageRecord) -> Image {
        Image {
            id: r.id.clone(),
            repo_tags: r.repo_tags.clone(),
            repo_digests: r.repo_digests.clone(),
            size: r.size,
            config: r.config.clone(),
            rootfs: self.rootfs_path(&r.id),
            pulled_at_unix_ns: r.pulled_at_unix_ns,
        }
    }

    /// Every image, by id.
    pub fn list(&self) -> Vec<Image> {
        let s = self.state();
        s.index.images.values().map(|r| self.image(r)).collect()
    }

    /// The image `name_or_id` names: a repo tag (normalized: `busybox` is
    /// `docker.io/library/busybox:latest`), a repo digest (`name@sha256:…`), a full id
    /// `sha256:<hex>`, or a unique id prefix of at least 12 hex digits.
    pub fn get(&self, name_or_id: &str) -> Option<Image> {
        let s = self.state();
        let found = s.index.find(name_or_id)?;
        s.index.images.get(found.id()).map(|r| self.image(r))
    }

    /// Removes a name or an image. A tag of an image that has other tags is just
    /// untagged; otherwise (the last tag, a digest or an id) the image goes, with its
    /// rootfs and the blobs no other image uses — unless it is acquired:
    /// [`ImageError::InUse`] names the users.
    pub fn remove(&self, name_or_id: &str) -> Result<()> {
        let (trash, id) = {
            let mut s = self.state();
            let found = s
                .index
                .find(name_or_id)
                .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
            let id = found.id().to_owned();
            let mut index = s.index.clone();
            let record = index
                .images
                .get(&id)
                .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
            if let Found::Tag(_, tag) = &found {
                if record.repo_tags.len() > 1 {
                    index.remove_tag(tag);
                    index.save(&self.inner.index_path)?;
                    s.index = index;
                    tracing::info!(image = %id, tag = %tag, "untagged");
                    return Ok(());
                }
            }
            let users = index.users_of(&id);
            if !users.is_empty() {
                return Err(ImageError::InUse { image: id, users });
            }
            let Some(record) = index.images.remove(&id) else {
                return Err(ImageError::NotFound(name_or_id.to_owned()));
            };
            index.save(&self.inner.index_path)?;
            s.index = index;
            // Blobs and rootfs in use by a pull in flight stay; the pull re-adds them.
            let referenced = s.index.referenced_blobs();
            for blob in &record.blobs {
                if !referenced.contains(blob.as_str()) && !s.pins.contains_key(blob) {
                    if let Err(e) = self.inner.blobs.remove(blob) {
                        tracing::warn!(blob = %blob, error = %e.chain(), "cannot remove blob");
                    }
                }
            }
            let mut trash = None;
            if !s.pins.contains_key(&id) {
                let rootfs = self.rootfs_path(&id);
                let to = self.inner.tmp_dir.join(format!(
                    "trash-{}-{}",
                    digest_hex(&id),
                    crate::image::now_unix_ns()
                ));
                match std::fs::rename(&rootfs, &to) {
                    Ok(()) => trash = Some(to),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %rootfs.display(), error = %e, "cannot move rootfs away; it goes at the next open")
                    }
                }
            }
            (trash, id)
        };
        if let Some(trash) = trash {
            if let Err(e) = std::fs::remove_dir_all(&trash) {
                tracing::warn!(path = %trash.display(), error = %e, "cannot delete removed rootfs; it goes at the next open");
            }
        }
        tracing::info!(image = %id, "removed");
        Ok(())
    }

    /// Records that `user` (a container id, say) uses the image `name_or_id`, so that it
    /// cannot be removed, and returns the image and its rootfs. Persisted: survives a
    /// restart until [`release`](Self::release).
    pub fn acquire(&self, name_or_id: &str, user: &str) -> Result<(Image, PathBuf)> {
        let mut s = self.state();
        let found = s
            .index
            .find(name_or_id)
            .ok_or_else(|| ImageError::NotFound(name_or_id.to_owned()))?;
        let Some(record) = s.index.images.get(found.id()) else {
            return Err(ImageError::NotFound(name_or_id.to_owned()));
        };
        let image = self.image(record);
        if !s
            .index
            .users
            .get(user)
            .is_some_and(|ids| ids.contains(&image.id))
        {
            let mut index = s.index.clone();
            index
                .users
                .entry(user.to_owned())
                .or_default()
                .insert(image.id.clone());
            index.save(&self.inner.index_path)?;
            s.index = index;
        }
        let rootfs = image.rootfs.clone();
        Ok((image, rootfs))
    }

    /// Drops every image reference `user` holds. Idempotent. Should the index not be
    /// written, the release holds in memory and is logged; the reference comes back at
    /// the next open (where cocoond releases users it does not know).
    pub fn release(&self, user: &str) {
        let mut s = self.state();
        if s.index.users.remove(user).is_none() {
            return;
        }
        if let Err(e) = s.index.save(&self.inner.index_path) {
            tracing::error!(user, error = %e.chain(), "cannot persist the release of image references");
        }
    }

    /// Everyone holding an image reference.
    pub fn users(&self) -> Vec<String> {
        self.state().index.users.keys().cloned().collect()
    }

    /// Bytes and inodes used under the root. Walks the whole tree: call it from a
    /// blocking context (`spawn_blocking`) in async code.
    pub fn usage(&self) -> FsUsage {
        crate::usage::measure(&self.inner.root)
    }

    /// Registry traffic since the store was opened.
    pub fn stats(&self) -> PullStats {
        PullStats {
            pulls: self.inner.pulls.load(Ordering::Relaxed),
            blobs_fetched: self.inner.blobs_fetched.load(Ordering::Relaxed),
            bytes_fetched: self.inner.bytes_fetched.load(Ordering::Relaxed),
        }
    }

    /// Pins `digests` until the guard drops.
    pub(crate) fn pin(&self, digests: Vec<String>) -> PinGuard {
        let mut s = self.state();
        for d in &digests {
            *s.pins.entry(d.clone()).or_default() += 1;
        }
        PinGuard {
            store: self.clone(),
            digests,
        }
    }

    /// Adds (or updates) an image whose blobs and rootfs are in place, pointing `tag`
    /// and `repo_digest` at it.
    pub(crate) fn commit(
        &self,
        record: ImageRecord,
        tag: Option<String>,
        repo_digest: Option<String>,
    ) -> Result<Image> {
        let mut s = self.state();
        let mut index = s.index.clone();
        let id = record.id.clone();
        match index.images.get_mut(&id) {
            Some(existing) => {
                for b in record.blobs {
                    if !existing.blobs.contains(&b) {
                        existing.blobs.push(b);
                    }
                }
            }
            None => {
                index.images.insert(id.clone(), record);
            }
        }
        if let Some(tag) = &tag {
            index.set_tag(&id, tag);
        }
        if let Some(d) = &repo_digest {
            index.add_digest(&id, d);
        }
        index.save(&self.inner.index_path)?;
        s.index = index;
        let record = s
            .index
            .images
            .get(&id)
            .ok_or_else(|| ImageError::NotFound(id.clone()))?;
        Ok(self.image(record))
    }
}

/// Unpins its digests when dropped.
pub(crate) struct PinGuard {
    store: ImageStore,
    digests: Vec<String>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut s = self.store.state();
        for d in &self.digests {
            if let Some(n) = s.pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    s.pins.remove(d);
                }
            }
        }
    }
}

/// Empties `dir` (the temp dir: half-written blobs and rootfs trees of a crash).
fn clear_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("read", dir)? {
        let path = entry.ctx("read", dir)?.path();
        let r = match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        r.ctx("remove", &path)?;
        tracing::debug!(path = %path.display(), "removed leftover temp entry");
    }
    Ok(())
}

/// Makes disk and index agree after a crash: images whose rootfs is gone are dropped,
/// rootfs dirs and blobs no image references are deleted. Returns whether the index
/// changed.
fn reconcile(index: &mut Index, rootfs_dir: &Path, blob_dir: &Path) -> Result<bool> {
    let mut changed = false;
    let missing: Vec<String> = index
        .images
        .keys()
        .filter(|id| !rootfs_dir.join(digest_hex(id)).is_dir())
        .cloned()
        .collect();
    for id in missing {
        tracing::warn!(image = %id, "rootfs missing; dropping the image from the index");
        index.images.remove(&id);
        for ids in index.users.values_mut() {
            ids.remove(&id);
        }
        changed = true;
    }
    index.users.retain(|_, ids| !ids.is_empty());
    for entry in std::fs::read_dir(rootfs_dir).ctx("read", rootfs_dir)? {
        let entry = entry.ctx("read", rootfs_dir)?;
        let id = format!("sha256:{}", entry.file_name().to_string_lossy());
        if !index.images.contains_key(&id) {
            tracing::info!(path = %entry.path().display(), "removing unreferenced rootfs");
            std::fs::remove_dir_all(entry.path()).ctx("remove", entry.path())?;
        }
    }
    let referenced = index.referenced_blobs();
    for entry in std::fs::read_dir(blob_dir).ctx("read", blob_dir)? {
        let entry = entry.ctx("read", blob_dir)?;
        let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
        if !referenced.contains(digest.as_str()) {
            tracing::info!(blob = %digest, "removing unreferenced blob");
            std::fs::remove_file(entry.path()).ctx("remove", entry.path())?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests;

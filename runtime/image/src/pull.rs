//! Pulling from a registry: resolve the reference to a linux/amd64 image manifest
//! (through an index when there is one), verify each document against its digest, then
//! [`install`](crate::install). Concurrent pulls of one reference share one download.

use crate::blob::sha256_digest;
use crate::error::{ImageError, Result};
use crate::image::Image;
use crate::install::{Resolved, Source};
use crate::manifest::{parse_document, select_platform, Document, ImagePlan, MANIFEST_LIMIT};
use crate::reference::{is_sha256_digest, ImageRef};
use crate::registry::{RegistryAuth, Remote};
use crate::store::ImageStore;
use futures::FutureExt;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

impl ImageStore {
    /// Pulls `reference` (normalized: `busybox` is `docker.io/library/busybox:latest`)
    /// and returns the image, tagged with the reference (or, for a reference pinned by
    /// digest, recorded under its repo digest). Mirrors are tried as the
    /// [`RegistriesConfig`](crate::RegistriesConfig) says; `auth` goes to the registry
    /// itself only.
    ///
    /// A pull of a reference already being pulled waits for that pull and returns its
    /// result (its `auth` is then not used). The download runs in its own task, so it
    /// completes even if every caller goes away.
    pub async fn pull(&self, reference: &str, auth: Option<RegistryAuth>) -> Result<Image> {
        let r = ImageRef::parse(reference)?;
        let key = r.to_string();
        let shared = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(running) => {
                    tracing::debug!(image = %key, "joining a pull in flight");
                    running.clone()
                }
                None => {
                    let store = self.clone();
                    let done_key = key.clone();
                    let task = tokio::spawn(async move {
                        let result = store.pull_now(&r, auth.as_ref()).await;
                        store
                            .inner
                            .inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&done_key);
                        result
                    });
                    let reference = key.clone();
                    let running = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ImageError::format(
                                reference,
                                format!("pull task failed: {e}"),
                            ))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, running.clone());
                    running
                }
            }
        };
        shared.await
    }

    async fn pull_now(&self, r: &ImageRef, auth: Option<&RegistryAuth>) -> Result<Image> {
        let started = std::time::Instant::now();
        self.inner.pulls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %r, "pulling");
        let result = self.pull_resolved(r, auth).await;
        match &result {
            Ok(image) => tracing::info!(
                image = %r,
                id = %image.id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "pulled"
            ),
            Err(e) => tracing::warn!(image = %r, error = %e.chain(), "pull failed"),
        }
        result
    }

    async fn pull_resolved(&self, r: &ImageRef, auth: Option<&RegistryAuth>) -> Result<Image> {
        let remote = Remote::new(r, &self.inner.registries, auth);
        let top = remote.manifest().await?;
        let top_digest = sha256_digest(&top.bytes);
        if let Some(want) = r.digest() {
            if want != top_digest {
                return Err(ImageError::DigestMismatch {
                    expected: want.to_owned(),
                    actual: top_digest,
                });
            }
        }
        let what = format!("manifest of {r}");
        let manifest = match parse_document(&top.bytes, &what)? {
            Document::Manifest(m) => (m, None),
            Document::Index(index) => {
                let desc = select_platform(&index, &what)?;
                let digest = desc.digest().to_string();
                if !is_sha256_digest(&digest) || desc.size() > MANIFEST_LIMIT {
                    return Err(ImageError::format(
                        &what,
                        format!(
                            "linux/amd64 entry {digest} ({} bytes) is not acceptable",
                            desc.size()
                        ),
                    ));
                }
                let child = remote.manifest_by_digest(top.endpoint, &digest).await?;
                let actual = sha256_digest(&child.bytes);
                if actual != digest {
                    return Err(ImageError::DigestMismatch {
                        expected: digest,
                        actual,
                    });
                }
                let child_what = format!("manifest {digest} of {r}");
                let Document::Manifest(m) = parse_document(&child.bytes, &child_what)? else {
                    return Err(ImageError::format(
                        child_what,
                        "an index where an image manifest belongs",
                    ));
                };
                (m, Some((digest, child.bytes)))
            }
        };
        let (manifest, child) = manifest;
        let plan = ImagePlan::from_manifest(&manifest, &what, self.inner.limits.max_layer_bytes)?;
        let mut documents = vec![(top_digest, top.bytes)];
        documents.extend(child);
        let source = Source::Registry {
            remote: &remote,
            endpoint: top.endpoint,
        };
        self.install(source, r, Resolved { documents, plan }).await
    }
}

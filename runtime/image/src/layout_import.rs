//! Importing an OCI image layout directory (what `umoci`, `skopeo copy oci:` and
//! `buildah push oci:` write; like `ctr import` of an unpacked archive).
//!
//! The image is the `index.json` entry whose `org.opencontainers.image.ref.name`
//! annotation is the reference's tag or the whole reference, or the only entry. Every
//! blob is read through the same verifying writer as a pull, so a layout cannot slip in
//! content that does not match its digests.

use crate::blob::{sha256_digest, BlobStore};
use crate::error::{ImageError, IoContext, Result};
use crate::image::Image;
use crate::install::{Resolved, Source};
use crate::manifest::{
    parse_document, select_platform, BlobRef, Document, ImagePlan, MANIFEST_LIMIT,
};
use crate::reference::{digest_hex, is_sha256_digest, ImageRef};
use crate::store::ImageStore;
use oci_spec::image::{Descriptor, ImageIndex};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout on disk.
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest))
    }

    /// Reads a small file whole, refusing one over `limit`.
    async fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
        let file = tokio::fs::File::open(path).await.ctx("open", path)?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .await
            .ctx("read", path)?;
        if bytes.len() as u64 > limit {
            return Err(ImageError::format(
                path.display().to_string(),
                format!("over the limit of {limit} bytes"),
            ));
        }
        Ok(bytes)
    }

    /// A manifest document by its descriptor, verified.
    async fn document(&self, d: &Descriptor) -> Result<(String, Vec<u8>)> {
        let digest = d.digest().to_string();
        if !is_sha256_digest(&digest) {
            return Err(ImageError::format(
                format!("layout {}", self.dir.display()),
                format!("digest {digest} is not sha256"),
            ));
        }
        let bytes = Self::read_small(&self.blob_path(&digest), MANIFEST_LIMIT).await?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        Ok((digest, bytes))
    }

    /// Copies `blob` into the store through a verifying writer.
    pub async fn copy_blob(&self, blob: &BlobRef, blobs: &BlobStore, limit: u64) -> Result<u64> {
        let path = self.blob_path(&blob.digest);
        let mut file = tokio::fs::File::open(&path).await.ctx("open", &path)?;
        let mut writer = blobs.writer(&blob.digest, Some(blob.size), limit)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).await.ctx("read", &path)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            writer.write(&buf[..n]).await?;
        }
        writer.commit().await?;
        Ok(total)
    }
}

impl ImageStore {
    /// Imports the image of the OCI layout at `layout_dir` (see the module doc for which
    /// entry) under the name `reference`.
    pub async fn import_oci_layout(&self, layout_dir: &Path, reference: &str) -> Result<Image> {
        let r = ImageRef::parse(reference)?;
        let layout = Layout {
            dir: layout_dir.to_path_buf(),
        };
        let what = format!("layout {}", layout_dir.display());
        let marker = Layout::read_small(&layout_dir.join("oci-layout"), 4096).await?;
        let version = serde_json::from_slice::<serde_json::Value>(&marker)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
        if version.as_deref() != Some("1.0.0") {
            return Err(ImageError::format(
                &what,
                "oci-layout is not imageLayoutVersion 1.0.0",
            ));
        }
        let index_bytes =
            Layout::read_small(&layout_dir.join("index.json"), MANIFEST_LIMIT).await?;
        let Document::Index(index) = parse_document(&index_bytes, &format!("{what}: index.json"))?
        else {
            return Err(ImageError::format(
                &what,
                "index.json is not an image index",
            ));
        };
        let entry = choose(&index, &r, reference, &what)?;
        let top = layout.document(entry).await?;
        let doc_what = format!("manifest {} in {what}", top.0);
        let mut documents = vec![top];
        let manifest = match parse_document(&documents[0].1, &doc_what)? {
            Document::Manifest(m) => m,
            Document::Index(nested) => {
                let child = layout
                    .document(select_platform(&nested, &doc_what)?)
                    .await?;
                let child_what = format!("manifest {} in {what}", child.0);
                let Document::Manifest(m) = parse_document(&child.1, &child_what)? else {
                    return Err(ImageError::format(
                        child_what,
                        "an index where an image manifest belongs",
                    ));
                };
                documents.push(child);
                m
            }
        };
        let plan =
            ImagePlan::from_manifest(&manifest, &doc_what, self.inner.limits.max_layer_bytes)?;
        tracing::info!(layout = %layout_dir.display(), image = %r, "importing");
        self.install(Source::Layout(&layout), &r, Resolved { documents, plan })
            .await
    }
}

/// The index entry for `r`: by `ref.name` annotation (the tag, or the reference as
/// given or normalized), else the only entry.
fn choose<'a>(
    index: &'a ImageIndex,
    r: &ImageRef,
    given: &str,
    what: &str,
) -> Result<&'a Descriptor> {
    let name_of = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    let normalized = r.to_string();
    let wanted = |n: &str| Some(n) == r.tag() || n == given || n == normalized;
    if let Some(d) = index
        .manifests()
        .iter()
        .find(|d| name_of(d).is_some_and(|n| wanted(&n)))
    {
        return Ok(d);
    }
    match index.manifests().as_slice() {
        [only] => Ok(only),
        many => {
            let names: Vec<String> = many.iter().filter_map(name_of).collect();
            Err(ImageError::format(
                what,
                format!(
                    "no image named {:?} (names: {})",
                    r.tag().unwrap_or(given),
                    names.join(", ")
                ),
            ))
        }
    }
}

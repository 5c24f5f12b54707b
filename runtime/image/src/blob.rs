//! Content-addressed blobs under `<root>/blobs/sha256/<hex>`, written through a
//! verifying writer: bytes go to a temp file while they are hashed and counted, and only
//! a blob whose digest (and size, when known) matches is fsynced and renamed into place.
//! A failed or dropped writer leaves nothing but a temp file that is removed with it.

use crate::error::{ImageError, IoContext, Result};
use crate::reference::{digest_hex, is_sha256_digest};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Blobs live in `dir`; temp files go to `tmp`, on the same filesystem.
    pub fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        BlobStore { dir, tmp }
    }

    /// Where the blob `digest` (a validated `sha256:` digest) lives.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest_hex(digest))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    pub fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io("remove", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// A writer for the blob `digest`. `size` is the descriptor's size when known;
    /// `limit` the most bytes accepted before the write is refused.
    pub fn writer(&self, digest: &str, size: Option<u64>, limit: u64) -> Result<BlobWriter> {
        if !is_sha256_digest(digest) {
            return Err(ImageError::format(
                format!("blob {digest}"),
                "not a sha256 digest",
            ));
        }
        if let Some(size) = size {
            if size > limit {
                return Err(too_large(digest, size, limit));
            }
        }
        let temp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .ctx("create a temp file in", &self.tmp)?;
        let (file, temp) = temp.into_parts();
        Ok(BlobWriter {
            file: tokio::fs::File::from_std(file),
            temp,
            hasher: Sha256::new(),
            written: 0,
            digest: digest.to_owned(),
            size,
            limit: size.unwrap_or(limit),
            dest: self.path(digest),
        })
    }

    /// Writes a blob held in memory (a manifest), verifying it like any other.
    pub async fn put(&self, digest: &str, bytes: &[u8], limit: u64) -> Result<()> {
        let mut w = self.writer(digest, Some(bytes.len() as u64), limit)?;
        w.write(bytes).await?;
        w.commit().await
    }
}

fn too_large(digest: &str, size: u64, limit: u64) -> ImageError {
    ImageError::format(
        format!("blob {digest}"),
        format!("{size} bytes is over the limit of {limit}"),
    )
}

/// A blob being written; see the module doc.
pub(crate) struct BlobWriter {
    file: tokio::fs::File,
    temp: tempfile::TempPath,
    hasher: Sha256,
    written: u64,
    digest: String,
    size: Option<u64>,
    limit: u64,
    dest: PathBuf,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.written = self.written.saturating_add(chunk.len() as u64);
        if self.written > self.limit {
            return Err(match self.size {
                Some(size) => ImageError::format(
                    format!("blob {}", self.digest),
                    format!("more bytes than the {size} its descriptor says"),
                ),
                None => too_large(&self.digest, self.written, self.limit),
            });
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .ctx("write", self.temp_path())
    }

    fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Verifies digest and size, then fsyncs and renames the blob into place.
    pub async fn commit(mut self) -> Result<()> {
        let actual = format!("sha256:{:x}", self.hasher.finalize_reset());
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        if let Some(size) = self.size {
            if size != self.written {
                return Err(ImageError::format(
                    format!("blob {}", self.digest),
                    format!("{} bytes, but its descriptor says {size}", self.written),
                ));
            }
        }
        self.file.flush().await.ctx("write", &self.temp)?;
        self.file.sync_all().await.ctx("fsync", &self.temp)?;
        drop(self.file);
        let dest = self.dest;
        self.temp
            .persist(&dest)
            .map_err(|e| ImageError::io("rename a temp file to", &dest, e.error))?;
        if let Some(dir) = dest.parent() {
            sync_dir(dir).await?;
        }
        Ok(())
    }
}

/// fsyncs a directory, so a rename into it survives a crash.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let d = tokio::fs::File::open(dir).await.ctx("open", dir)?;
    d.sync_all().await.ctx("fsync", dir)
}

/// The `sha256:` digest of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let s = BlobStore::new(dir.path().join("blobs"), dir.path().join("tmp"));
        (dir, s)
    }

    fn tmp_is_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir.join("tmp")).unwrap().next().is_none()
    }

    #[tokio::test]
    async fn verified_blobs_land_in_place() {
        let (dir, s) = store();
        let data = b"hello blob";
        let d = sha256_digest(data);
        let mut w = s.writer(&d, Some(data.len() as u64), 1024).unwrap();
        w.write(&data[..4]).await.unwrap();
        w.write(&data[4..]).await.unwrap();
        w.commit().await.unwrap();
        assert!(s.contains(&d));
        assert_eq!(std::fs::read(s.path(&d)).unwrap(), data);
        assert!(tmp_is_empty(dir.path()));
        s.remove(&d).unwrap();
        s.remove(&d).unwrap();
        assert!(!s.contains(&d));
    }

    #[tokio::test]
    async fn mismatches_and_overruns_leave_nothing() {
        let (dir, s) = store();
        let d = sha256_digest(b"expected");
        let mut w = s.writer(&d, None, 1024).unwrap();
        w.write(b"something else").await.unwrap();
        let e = w.commit().await.unwrap_err();
        assert!(
            matches!(&e, ImageError::DigestMismatch { expected, actual } if *expected == d && *actual == sha256_digest(b"something else")),
            "{e}"
        );
        assert!(!s.contains(&d));

        let mut w = s.writer(&d, Some(4), 1024).unwrap();
        let e = w.write(b"12345").await.unwrap_err();
        assert!(e.to_string().contains("descriptor"), "{e}");
        drop(w);

        let mut w = s.writer(&d, None, 3).unwrap();
        assert!(w
            .write(b"1234")
            .await
            .unwrap_err()
            .to_string()
            .contains("limit"));
        drop(w);
        assert!(s.writer(&d, Some(10), 3).is_err());
        assert!(s.writer("sha256:nothex", None, 3).is_err());
        assert!(tmp_is_empty(dir.path()));
        assert!(!s.contains(&d));
    }

    #[tokio::test]
    async fn put_checks_the_digest() {
        let (_dir, s) = store();
        let d = sha256_digest(b"{}");
        s.put(&d, b"{}", 10).await.unwrap();
        assert!(s.contains(&d));
        assert!(matches!(
            s.put(&d, b"{ }", 10).await,
            Err(ImageError::DigestMismatch { .. })
        ));
    }
}

//! Test helpers: tar layers with arbitrary (even hostile) names, and OCI image layouts
//! built from them.

use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;

/// A tar archive built entry by entry, with names written verbatim (no cleaning, so
/// tests can use `..` and absolute names).
pub(crate) struct Tar {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for Tar {
    fn default() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
        }
    }
}

impl Tar {
    fn header(&self, kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names stay short: {name}");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn push(mut self, mut h: tar::Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.b.append(&h, data).expect("append to a Vec");
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    pub fn dir(self, name: &str) -> Self {
        self.dir_mode(name, 0o755)
    }

    pub fn dir_mode(self, name: &str, mode: u32) -> Self {
        let h = self.header(tar::EntryType::Directory, name, mode, 0);
        self.push(h, &[])
    }

    pub fn file(self, name: &str, content: &[u8]) -> Self {
        self.file_mode(name, content, 0o644)
    }

    pub fn file_mode(self, name: &str, content: &[u8], mode: u32) -> Self {
        let h = self.header(tar::EntryType::Regular, name, mode, content.len() as u64);
        self.push(h, content)
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Symlink, name, 0o777, 0);
        h.set_link_name_literal(target).expect("short link name");
        self.push(h, &[])
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Link, name, 0o644, 0);
        h.set_link_name_literal(target).expect("short link name");
        self.push(h, &[])
    }

    pub fn fifo(self, name: &str) -> Self {
        let h = self.header(tar::EntryType::Fifo, name, 0o600, 0);
        self.push(h, &[])
    }

    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file_mode(&path, b"", 0)
    }

    pub fn opaque(self, dir: &str) -> Self {
        let path = if dir.is_empty() {
            ".wh..wh..opq".to_owned()
        } else {
            format!("{dir}/.wh..wh..opq")
        };
        self.file_mode(&path, b"", 0)
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish a Vec")
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip to a Vec");
    gz.finish().expect("gzip to a Vec")
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd to a Vec")
}

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Writes `data` as a blob of the layout at `dir`; returns its descriptor JSON.
fn put_blob(dir: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let digest = sha256(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("create blobs dir");
    std::fs::write(blobs.join(&digest[7..]), data).expect("write blob");
    serde_json::json!({ "mediaType": media_type, "digest": digest, "size": data.len() })
}

/// A layer for [`write_layout`]: the uncompressed tar and how to store it.
pub(crate) struct TestLayer {
    pub tar: Vec<u8>,
    pub compression: &'static str, // "gzip", "zstd" or "none"
}

/// Writes an OCI image layout at `dir` holding one image tagged `tag` (the
/// `org.opencontainers.image.ref.name` annotation) with `layers` and `cmd`; returns the
/// config digest (the image id).
pub(crate) fn write_layout(dir: &Path, tag: &str, layers: &[TestLayer], cmd: &[&str]) -> String {
    std::fs::create_dir_all(dir).expect("create layout dir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha256(&l.tar));
        let (mt, data) = match l.compression {
            "gzip" => ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&l.tar)),
            "zstd" => ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&l.tar)),
            _ => ("application/vnd.oci.image.layer.v1.tar", l.tar.clone()),
        };
        descs.push(put_blob(dir, mt, &data));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/", "Labels": {"test": tag} },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config_bytes = serde_json::to_vec(&config).expect("serialize config");
    let config_desc = put_blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &config_bytes,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("serialize manifest");
    let mut manifest_desc = put_blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest_bytes,
    );
    manifest_desc["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [manifest_desc] });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("serialize index"),
    )
    .expect("write index.json");
    sha256(&config_bytes)
}

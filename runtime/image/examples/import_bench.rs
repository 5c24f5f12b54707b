//! Import throughput: packs a host directory into a one-layer OCI layout (tar+gzip)
//! and times `ImageStore::import_oci_layout` on it — blob copy with sha256, gunzip,
//! diff_id hash, unpack with per-component path resolution, syncfs.
//!
//! `cargo run --release -p cocoon-image --example import_bench -- [DIR]` (default
//! `/usr/share`).

use cocoon_image::{ImageStore, RegistriesConfig};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn put(layout: &Path, data: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{:x}", Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), data).expect("write blob");
    (digest, data.len())
}

#[tokio::main]
async fn main() {
    let src = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/usr/share".into());
    let work = tempfile::Builder::new()
        .prefix("cocoon-import-bench-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    let layout = work.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout dir");

    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all("data", &src).expect("tar the source");
    let tar = b.into_inner().expect("tar");
    let entries = tar::Archive::new(&tar[..])
        .entries()
        .expect("entries")
        .count();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let diff_id = format!("sha256:{:x}", Sha256::digest(&tar));
    let (layer, layer_size) = put(&layout, &gz);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let (config, config_size) = put(&layout, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    });
    let (manifest, manifest_size) = put(&layout, &serde_json::to_vec(&manifest).expect("json"));
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("marker");

    let store =
        ImageStore::open(&work.path().join("store"), RegistriesConfig::default()).expect("open");
    let started = Instant::now();
    store
        .import_oci_layout(&layout, "localhost/bench:latest")
        .await
        .expect("import");
    let secs = started.elapsed().as_secs_f64();
    let mb = tar.len() as f64 / 1e6;
    println!(
        "{src}: {entries} entries, {mb:.0} MB tar, {:.0} MB gzip: imported in {secs:.2} s = {:.0} MB/s of tar, {:.0} entries/s",
        gz.len() as f64 / 1e6,
        mb / secs,
        entries as f64 / secs
    );
}

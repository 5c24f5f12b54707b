//! Store semantics, driven through OCI layout imports (no registry needed).

use super::*;
use crate::testutil::{write_layout, Tar, TestLayer};
use crate::ErrorKind;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    layouts: PathBuf,
    store: ImageStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let layouts = dir.path().join("layouts");
    let store = ImageStore::open(&root, RegistriesConfig::default()).unwrap();
    Fixture {
        _dir: dir,
        root,
        layouts,
        store,
    }
}

fn base_layer() -> TestLayer {
    TestLayer {
        tar: Tar::default()
            .dir("bin")
            .file_mode("bin/tool", b"tool", 0o755)
            .file("etc/os-release", b"ID=test")
            .finish(),
        compression: "gzip",
    }
}

impl Fixture {
    /// Writes a layout with the base layer plus one holding `marker`, imports it as
    /// `name`; returns the image.
    async fn import(&self, layout: &str, name: &str, marker: &str) -> Image {
        let dir = self.layouts.join(layout);
        let top = TestLayer {
            tar: Tar::default().file("marker", marker.as_bytes()).finish(),
            compression: "zstd",
        };
        write_layout(&dir, "v1", &[base_layer(), top], &["/bin/tool"]);
        self.store.import_oci_layout(&dir, name).await.unwrap()
    }

    fn tmp_is_empty(&self) -> bool {
        std::fs::read_dir(self.root.join("tmp"))
            .unwrap()
            .next()
            .is_none()
    }

    fn blob_count(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .unwrap()
            .count()
    }
}

#[tokio::test]
async fn imported_images_are_found_by_every_name() {
    let f = fixture();
    let image = f.import("one", "example.com/app:v1", "one").await;
    assert_eq!(image.repo_tags, ["example.com/app:v1"]);
    assert_eq!(image.repo_digests.len(), 1);
    assert!(image.repo_digests[0].starts_with("example.com/app@sha256:"));
    assert_eq!(image.config.cmd, ["/bin/tool"]);
    assert_eq!(image.config.env, ["PATH=/bin"]);
    assert_eq!(image.rootfs, f.root.join("rootfs").join(&image.id[7..]));
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("marker")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("bin/tool")).unwrap(),
        "tool"
    );
    assert!(image.size > 0);
    for name in [
        "example.com/app:v1",
        image.id.as_str(),
        &image.id[7..19],
        &image.repo_digests[0],
    ] {
        assert_eq!(f.store.get(name).as_ref(), Some(&image), "{name}");
    }
    assert!(f.store.get("example.com/app:v2").is_none());
    assert_eq!(f.store.list(), [image]);
    assert!(f.tmp_is_empty());
    let usage = f.store.usage();
    assert!(usage.bytes > 0 && usage.inodes > 5, "{usage:?}");
    assert_eq!(
        f.store.stats().blobs_fetched,
        0,
        "imports are not downloads"
    );
}

#[tokio::test]
async fn short_names_are_normalized() {
    let f = fixture();
    let image = f.import("one", "busybox", "bb").await;
    assert_eq!(image.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(
        f.store.get("docker.io/library/busybox:latest"),
        Some(image.clone())
    );
    assert_eq!(f.store.get("library/busybox:latest"), Some(image));
}

#[tokio::test]
async fn a_moved_tag_leaves_the_old_image_untagged() {
    let f = fixture();
    let old = f.import("one", "example.com/app:v1", "one").await;
    let new = f.import("two", "example.com/app:v1", "two").await;
    assert_ne!(old.id, new.id);
    assert_eq!(f.store.get("example.com/app:v1").unwrap().id, new.id);
    let old_now = f.store.get(&old.id).unwrap();
    assert!(old_now.repo_tags.is_empty());
    assert_eq!(f.store.list().len(), 2);
    // Removing it by id takes its rootfs and its own blobs, not the shared base layer.
    let blobs = f.blob_count();
    f.store.remove(&old.id).unwrap();
    assert!(!old.rootfs.exists());
    assert!(new.rootfs.join("bin/tool").exists());
    assert_eq!(
        f.blob_count(),
        blobs - 3,
        "manifest, config and top layer of the old image"
    );
    assert!(f.tmp_is_empty());
}

#[tokio::test]
async fn removing_tags_then_the_image() {
    let f = fixture();
    let image = f.import("one", "example.com/app:v1", "one").await;
    let again = f
        .store
        .import_oci_layout(&f.layouts.join("one"), "example.com/app:latest")
        .await
        .unwrap();
    assert_eq!(again.id, image.id);
    assert_eq!(
        again.repo_tags,
        ["example.com/app:latest", "example.com/app:v1"]
    );
    f.store.remove("example.com/app:v1").unwrap();
    let left = f.store.get(&image.id).unwrap();
    assert_eq!(left.repo_tags, ["example.com/app:latest"]);
    assert!(image.rootfs.exists());
    f.store.remove("example.com/app").unwrap();
    assert!(f.store.get(&image.id).is_none());
    assert!(!image.rootfs.exists());
    assert_eq!(f.blob_count(), 0);
    let e = f.store.remove("example.com/app").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn acquired_images_stay_until_released() {
    let f = fixture();
    let image = f.import("one", "example.com/app:v1", "one").await;
    let (got, rootfs) = f
        .store
        .acquire("example.com/app:v1", "container-1")
        .unwrap();
    assert_eq!(got, image);
    assert_eq!(rootfs, image.rootfs);
    f.store.acquire(&image.id, "container-2").unwrap();
    f.store.acquire(&image.id, "container-2").unwrap();
    assert_eq!(f.store.users(), ["container-1", "container-2"]);
    let e = f.store.remove("example.com/app:v1").unwrap_err();
    assert!(
        matches!(&e, ImageError::InUse { users, .. } if users == &["container-1", "container-2"]),
        "{e}"
    );
    assert!(e.to_string().contains("container-1, container-2"), "{e}");
    f.store.release("container-1");
    f.store.release("container-1");
    assert_eq!(
        f.store.remove(&image.id).unwrap_err().kind(),
        ErrorKind::InUse
    );
    f.store.release("container-2");
    f.store.remove(&image.id).unwrap();
    assert!(f.store.users().is_empty());
    assert_eq!(
        f.store
            .acquire("example.com/app:v1", "c")
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn reopening_keeps_images_and_references_and_drops_leftovers() {
    let f = fixture();
    let image = f.import("one", "example.com/app:v1", "one").await;
    f.store.acquire("example.com/app:v1", "c1").unwrap();
    drop(f.store.clone());
    // What a crash could leave: temp entries, an unreferenced rootfs and blob.
    std::fs::create_dir_all(f.root.join("tmp/unpack-123/usr")).unwrap();
    std::fs::write(f.root.join("tmp/blob-456"), b"half").unwrap();
    let orphan = f.root.join("rootfs").join("f".repeat(64));
    std::fs::create_dir_all(orphan.join("etc")).unwrap();
    let orphan_blob = f.root.join("blobs/sha256").join("e".repeat(64));
    std::fs::write(&orphan_blob, b"x").unwrap();

    let store = ImageStore::open(&f.root, RegistriesConfig::default()).unwrap();
    assert_eq!(store.get("example.com/app:v1"), Some(image.clone()));
    assert_eq!(store.users(), ["c1"]);
    assert_eq!(
        store.remove(&image.id).unwrap_err().kind(),
        ErrorKind::InUse
    );
    assert!(f.tmp_is_empty());
    assert!(!orphan.exists());
    assert!(!orphan_blob.exists());
}

#[tokio::test]
async fn corrupt_layouts_are_refused_and_leave_nothing() {
    let f = fixture();
    let dir = f.layouts.join("bad");
    write_layout(&dir, "v1", &[base_layer()], &["sh"]);
    // Corrupt the layer blob (the largest file), keeping its size.
    let blobs = dir.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let e = f
        .store
        .import_oci_layout(&dir, "example.com/bad:v1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
    assert!(f.store.list().is_empty());
    assert!(f.tmp_is_empty());
    assert!(std::fs::read_dir(f.root.join("rootfs"))
        .unwrap()
        .next()
        .is_none());

    let e = f
        .store
        .import_oci_layout(&f.layouts.join("missing"), "x:v1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let e = f
        .store
        .import_oci_layout(&dir, "Bad Name")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidReference, "{e}");
}

#[tokio::test]
async fn layout_entries_are_chosen_by_ref_name() {
    let f = fixture();
    let dir = f.layouts.join("multi");
    write_layout(&dir, "v1", &[base_layer()], &["one"]);
    // Add a second entry named v2 to index.json.
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let mut second = index["manifests"][0].clone();
    second["annotations"]["org.opencontainers.image.ref.name"] = "v2".into();
    index["manifests"].as_array_mut().unwrap().push(second);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    f.store
        .import_oci_layout(&dir, "example.com/app:v2")
        .await
        .unwrap();
    let e = f
        .store
        .import_oci_layout(&dir, "example.com/app:v3")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("names: v1, v2"), "{e}");
}

#[tokio::test]
async fn bad_registry_config_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut registries = RegistriesConfig::default();
    registries.hosts.insert(
        "docker.io".into(),
        crate::RegistryHost {
            mirrors: vec!["ftp://nope".into()],
            ..Default::default()
        },
    );
    let e = ImageStore::open(dir.path(), registries).unwrap_err();
    assert!(
        e.to_string().contains(r#"hosts."docker.io".mirrors[0]"#),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_references_are_refused_before_any_network() {
    let f = fixture();
    let e = f.store.pull("UPPER/case:v1", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidReference);
    assert!(e.to_string().contains("UPPER/case:v1"), "{e}");
    assert_eq!(f.store.stats().pulls, 0);
}

#[test]
fn the_store_is_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<ImageStore>();
}

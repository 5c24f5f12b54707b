//! The image store against a real registry on loopback (no VM): pulls in every format,
//! layer semantics across layers, mirrors, failures, coalescing, usage references and
//! restarts, OCI layout imports.

use cocoon_image::{ErrorKind, Image, ImageError, ImageStore, RegistriesConfig, RegistryHost};
use cocoon_tests::registry::{
    add_raw_layer, build_busybox_image, free_port, Compression, IndexEntry, PushOptions,
    TestRegistry,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A scratch dir with a store in it; the registry config reaches `plain` hosts over
/// plain HTTP.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("cocoon-image-test-")
                .tempdir()
                .expect("create scratch dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self, registries: RegistriesConfig) -> ImageStore {
        ImageStore::open(&self.path("store"), registries).expect("open the store")
    }

    fn store_tmp_is_empty(&self) -> bool {
        std::fs::read_dir(self.path("store/tmp"))
            .expect("read store tmp")
            .next()
            .is_none()
    }
}

fn plain_http(hosts: &[&str]) -> RegistriesConfig {
    let mut c = RegistriesConfig::default();
    for h in hosts {
        c.hosts.insert(
            h.to_string(),
            RegistryHost {
                plain_http: true,
                ..Default::default()
            },
        );
    }
    c
}

/// The busybox image with `/etc/motd`, pushed as `test/busybox:<tag>`.
fn busybox_pushed(s: &Scratch, reg: &TestRegistry, tag: &str, opts: PushOptions) -> String {
    let layout = s.path("layout");
    build_busybox_image(
        &layout,
        tag,
        &[("etc/motd", b"hello from the image\n")],
        &[],
    );
    reg.push_with(&layout, tag, "test/busybox", opts)
}

const GZIP_DOCKER: PushOptions = PushOptions {
    compression: Compression::Gzip,
    docker_v2s2: true,
};
const ZSTD_OCI: PushOptions = PushOptions {
    compression: Compression::Zstd,
    docker_v2s2: false,
};

fn assert_busybox_rootfs(image: &Image) {
    let busybox = image.rootfs.join("bin/busybox");
    let mode = std::fs::metadata(&busybox)
        .expect("bin/busybox")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "busybox is executable: {mode:o}");
    assert_eq!(
        std::fs::read_link(image.rootfs.join("bin/sh")).expect("bin/sh"),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("etc/motd")).expect("etc/motd"),
        "hello from the image\n"
    );
    assert_eq!(image.config.cmd, ["/bin/sh"]);
}

#[tokio::test]
async fn pulls_gzip_docker_and_zstd_oci_images() {
    let reg = TestRegistry::start();
    for (tag, opts) in [("gzip", GZIP_DOCKER), ("zstd", ZSTD_OCI)] {
        let s = Scratch::new();
        busybox_pushed(&s, &reg, tag, opts);
        let store = s.store(plain_http(&[&reg.addr()]));
        let reference = format!("{}/test/busybox:{tag}", reg.addr());
        let image = store.pull(&reference, None).await.expect("pull");
        assert_busybox_rootfs(&image);
        assert_eq!(image.repo_tags, std::slice::from_ref(&reference));
        assert_eq!(image.repo_digests.len(), 1);
        assert!(image.size > 500_000, "busybox is ~2 MB: {}", image.size);
        assert_eq!(store.get(&reference), Some(image.clone()));
        assert_eq!(store.stats().blobs_fetched, 2, "config + one layer");
        assert!(s.store_tmp_is_empty());

        // A second pull finds every blob and the rootfs in place.
        let again = store.pull(&reference, None).await.expect("pull again");
        assert_eq!(again.id, image.id);
        assert_eq!(store.stats().blobs_fetched, 2);
    }
}

#[tokio::test]
async fn index_resolves_to_linux_amd64_and_digests_pin() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    let layout = s.path("layout");
    build_busybox_image(&layout, "amd", &[("etc/arch", b"amd64")], &[]);
    build_busybox_image(&layout, "arm", &[("etc/arch", b"arm64")], &[]);
    let amd = reg.push(&layout, "amd", "test/multi", Compression::Gzip);
    let arm = reg.push(&layout, "arm", "test/multi", Compression::Gzip);
    let entry = |digest: &str, arch: &str| IndexEntry {
        digest: digest.to_owned(),
        os: "linux".into(),
        architecture: arch.into(),
    };
    let index = reg.push_index(
        "test/multi",
        "latest",
        &[entry(&arm, "arm64"), entry(&amd, "amd64")],
    );
    let store = s.store(plain_http(&[&reg.addr()]));
    let name = format!("{}/test/multi", reg.addr());
    let image = store.pull(&name, None).await.expect("pull the index");
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("etc/arch")).unwrap(),
        "amd64"
    );
    assert_eq!(image.repo_tags, [format!("{name}:latest")]);
    assert_eq!(
        image.repo_digests,
        [format!("{name}@{index}")],
        "the digest the tag names"
    );

    // By digest: no tag, the manifest's own repo digest.
    let pinned = format!("{name}@{amd}");
    let same = store.pull(&pinned, None).await.expect("pull by digest");
    assert_eq!(same.id, image.id);
    assert!(
        same.repo_digests.contains(&pinned),
        "{:?}",
        same.repo_digests
    );
    assert_eq!(store.get(&pinned).map(|i| i.id), Some(image.id));
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_across_layers() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    let layout = s.path("layout");
    let files: &[(&str, &[u8])] = &[
        ("data/keep", b"k"),
        ("data/gone", b"g"),
        ("data/sub/gone-too", b"g"),
        ("opaque/lower", b"l"),
        ("opaque/nested/lower", b"l"),
    ];
    build_busybox_image(&layout, "wh", files, &["data/gone", "data/sub"]);
    // A third layer: `opaque` made opaque, with one entry before and one after the
    // marker.
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind) in [
        ("opaque/before", tar::EntryType::Regular),
        ("opaque/.wh..wh..opq", tar::EntryType::Regular),
        ("opaque/after", tar::EntryType::Regular),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(1);
        h.set_cksum();
        tar.append(&h, &b"u"[..]).unwrap();
    }
    add_raw_layer(&layout, "wh", &tar.into_inner().unwrap());
    reg.push(&layout, "wh", "test/layers", Compression::Zstd);

    let store = s.store(plain_http(&[&reg.addr()]));
    let image = store
        .pull(&format!("{}/test/layers:wh", reg.addr()), None)
        .await
        .expect("pull");
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(image.rootfs.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("data"), ["keep"]);
    assert_eq!(names("opaque"), ["after", "before"]);
    assert!(image.rootfs.join("bin/busybox").exists());
}

#[tokio::test]
async fn mirrors_are_tried_in_order_before_the_upstream() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    busybox_pushed(&s, &reg, "gzip", GZIP_DOCKER);
    let mut registries = RegistriesConfig::default();
    registries.hosts.insert(
        "registry.invalid".into(),
        RegistryHost {
            mirrors: vec![format!("http://127.0.0.1:{}", free_port()), reg.url()],
            ..Default::default()
        },
    );
    let store = s.store(registries);
    let image = store
        .pull("registry.invalid/test/busybox:gzip", None)
        .await
        .expect("pull through the second mirror");
    assert_busybox_rootfs(&image);
    assert_eq!(image.repo_tags, ["registry.invalid/test/busybox:gzip"]);
    assert!(store.get("registry.invalid/test/busybox:gzip").is_some());

    // An image no mirror has: every endpoint is named in the error.
    let e = store
        .pull("registry.invalid/test/missing:v1", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Registry, "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("registry registry.invalid: "), "{msg}");
    assert!(
        msg.contains(&reg.url()) && msg.contains("mirror http://127.0.0.1:"),
        "{msg}"
    );
}

#[tokio::test]
async fn unreachable_registries_and_bad_references_are_clear_errors() {
    let s = Scratch::new();
    let closed = format!("127.0.0.1:{}", free_port());
    let store = s.store(plain_http(&[&closed]));
    for (reference, registry) in [
        (format!("{closed}/test/x:v1"), closed.clone()),
        (
            "registry.invalid/test/x:v1".to_owned(),
            "registry.invalid".to_owned(),
        ),
    ] {
        let e = store.pull(&reference, None).await.unwrap_err();
        assert!(
            matches!(&e, ImageError::Registry { registry: r, .. } if *r == registry),
            "{reference}: {e}"
        );
    }
    for bad in ["Upper/Case", "a b", "x@sha256:123", ""] {
        let e = store.pull(bad, None).await.unwrap_err();
        assert!(
            matches!(&e, ImageError::InvalidReference { reference, .. } if reference == bad),
            "{bad:?}: {e}"
        );
    }
    assert!(store.list().is_empty());
    assert!(s.store_tmp_is_empty());
}

#[tokio::test]
async fn a_corrupt_blob_fails_the_pull_and_leaves_nothing() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    let manifest = busybox_pushed(&s, &reg, "gzip", GZIP_DOCKER);
    // Find the layer and corrupt its last byte in the registry's storage.
    let (status, body) = reg
        .http(
            "GET",
            &format!("/v2/test/busybox/manifests/{manifest}"),
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            b"",
        )
        .unwrap();
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let path = reg.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();

    let store = s.store(plain_http(&[&reg.addr()]));
    let e = store
        .pull(&format!("{}/test/busybox:gzip", reg.addr()), None)
        .await
        .unwrap_err();
    match &e {
        ImageError::DigestMismatch { expected, actual } => {
            assert_eq!(*expected, layer);
            assert_ne!(actual, expected);
        }
        other => panic!("want a digest mismatch, got {other}"),
    }
    assert!(store.list().is_empty());
    assert!(s.store_tmp_is_empty(), "no temp files left");
    assert!(
        std::fs::read_dir(s.path("store/rootfs"))
            .unwrap()
            .next()
            .is_none(),
        "no rootfs left"
    );
    let layer_blob = s.path("store/blobs/sha256").join(&layer[7..]);
    assert!(!layer_blob.exists(), "the corrupt blob was not kept");
}

#[tokio::test]
async fn concurrent_pulls_of_one_reference_download_once() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    busybox_pushed(&s, &reg, "gzip", GZIP_DOCKER);
    let store = s.store(plain_http(&[&reg.addr()]));
    let reference = format!("{}/test/busybox:gzip", reg.addr());
    let manifests_before = reg.requests("GET", "/v2/test/busybox/manifests/");
    let blobs_before = reg.requests("GET", "/v2/test/busybox/blobs/");
    let (a, b, c) = tokio::join!(
        store.pull(&reference, None),
        store.pull(&reference, None),
        store.pull("127.0.0.1:1/never/used:v1", None),
    );
    let (a, b) = (a.expect("first pull"), b.expect("second pull"));
    assert_eq!(a, b);
    assert!(c.is_err());
    let stats = store.stats();
    assert_eq!(
        stats.pulls, 2,
        "one for the shared reference, one for the other"
    );
    assert_eq!(stats.blobs_fetched, 2, "config and layer once");
    assert_eq!(
        reg.requests("GET", "/v2/test/busybox/manifests/") - manifests_before,
        1,
        "{}",
        reg.log()
    );
    assert_eq!(
        reg.requests("GET", "/v2/test/busybox/blobs/") - blobs_before,
        2
    );
}

#[tokio::test]
async fn in_use_images_survive_removal_and_restarts() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    busybox_pushed(&s, &reg, "gzip", GZIP_DOCKER);
    let reference = format!("{}/test/busybox:gzip", reg.addr());
    let image = {
        let store = s.store(plain_http(&[&reg.addr()]));
        let image = store.pull(&reference, None).await.expect("pull");
        let (acquired, rootfs) = store.acquire(&reference, "container-a").expect("acquire");
        assert_eq!(acquired.id, image.id);
        assert!(rootfs.join("bin/busybox").exists());
        image
    };
    // A restart keeps the image and the reference.
    let store = s.store(plain_http(&[&reg.addr()]));
    assert_eq!(store.get(&reference), Some(image.clone()));
    assert_eq!(
        store.get(&image.id[..19]).map(|i| i.id),
        Some(image.id.clone())
    );
    assert_eq!(store.users(), ["container-a"]);
    let e = store.remove(&reference).unwrap_err();
    assert!(
        matches!(&e, ImageError::InUse { users, .. } if users == &["container-a"]),
        "{e}"
    );
    assert!(image.rootfs.exists());
    store.release("container-a");
    store.release("container-a");
    store.remove(&reference).expect("remove");
    assert!(store.get(&reference).is_none());
    assert!(!image.rootfs.exists());
    assert_eq!(
        std::fs::read_dir(s.path("store/blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "every blob went with the image"
    );
    assert_eq!(
        store.remove(&reference).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_moved_tag_points_at_the_new_image() {
    let reg = TestRegistry::start();
    let s = Scratch::new();
    let layout = s.path("layout");
    let store = s.store(plain_http(&[&reg.addr()]));
    let reference = format!("{}/test/app:v1", reg.addr());
    build_busybox_image(&layout, "v1", &[("version", b"1")], &[]);
    reg.push(&layout, "v1", "test/app", Compression::Gzip);
    let old = store.pull(&reference, None).await.expect("pull v1");
    let layout2 = s.path("layout2");
    build_busybox_image(&layout2, "v1", &[("version", b"2")], &[]);
    reg.push(&layout2, "v1", "test/app", Compression::Gzip);
    let new = store
        .pull(&reference, None)
        .await
        .expect("pull the moved tag");
    assert_ne!(old.id, new.id);
    assert_eq!(
        std::fs::read_to_string(new.rootfs.join("version")).unwrap(),
        "2"
    );
    assert_eq!(store.get(&reference).map(|i| i.id), Some(new.id));
    let old_now = store.get(&old.id).expect("the old image stays");
    assert!(old_now.repo_tags.is_empty());
    assert_eq!(store.list().len(), 2);
}

#[tokio::test]
async fn imports_an_oci_layout_built_by_umoci() {
    let s = Scratch::new();
    let layout = s.path("layout");
    build_busybox_image(
        &layout,
        "local",
        &[("etc/motd", b"hello from the image\n")],
        &["bin/ls"],
    );
    let store = s.store(RegistriesConfig::default());
    let image = store
        .import_oci_layout(&layout, "localhost/cocoon/busybox:local")
        .await
        .expect("import");
    assert_busybox_rootfs(&image);
    assert!(
        !image.rootfs.join("bin/ls").exists(),
        "the whiteout layer applied"
    );
    assert_eq!(image.repo_tags, ["localhost/cocoon/busybox:local"]);
    assert_eq!(store.get("localhost/cocoon/busybox:local"), Some(image));
    let usage = store.usage();
    assert!(usage.bytes > 2_000_000, "{usage:?}");
    assert_eq!(usage.root, s.path("store"));
}

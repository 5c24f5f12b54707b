//! cocoond's ImageService against a registry the test starts on 127.0.0.1, with images
//! the test builds: a pull through a mirror configuration (the image's own registry is
//! unreachable), a container from the pulled image, ImageStatus / ListImages /
//! ImageFsInfo, RemoveImage refused while in use, a digest mismatch.

use cocoon_tests::cri::*;
use cocoon_tests::registry::{build_busybox_image, Compression, TestRegistry};
use k8s_cri::v1::*;
use std::time::Duration;
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_through_a_mirror_and_run() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    build_busybox_image(
        &layout,
        "v1",
        &[("/etc/motd", b"pulled through the mirror\n")],
        &[],
    );
    reg.push(&layout, "v1", "team/app", Compression::Zstd);

    // The image is named after a registry nobody can reach; the config sends it to the
    // loopback registry as a plain-HTTP mirror.
    let d = Cocoond::start(&format!(
        "[registries.hosts.\"registry.invalid\"]\nmirrors = [\"http://{}\"]\n",
        reg.addr()
    ))
    .await;
    let mut c = d.client().await;
    let name = "registry.invalid/team/app:v1";
    let pulled = c
        .images
        .pull_image(PullImageRequest {
            image: spec(name),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage: {e:?}\n{}", d.log()))
        .into_inner()
        .image_ref;
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    let st = c
        .images
        .image_status(ImageStatusRequest {
            image: spec(name),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let img = st.image.expect("image present");
    assert_eq!(img.id, pulled);
    assert!(
        img.repo_tags.iter().any(|t| t == name),
        "{:?}",
        img.repo_tags
    );
    assert!(img.size > 0);
    assert!(st.info["info"].contains("rootfs"));
    let absent = c
        .images
        .image_status(ImageStatusRequest {
            image: spec("registry.invalid/none:1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(absent.image.is_none(), "an absent image is an empty answer");
    let fs = c
        .images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);

    let logs = d.log_dir("pulled");
    let cfg = pod_config("pulled", &logs);
    let pod = run_pod(&mut c, cfg.clone()).await;
    let id = start_container(
        &mut c,
        &pod,
        &cfg,
        container_config("m", name, &["cat", "/etc/motd"]),
    )
    .await;
    let st = wait_exited(&mut c, &id, Duration::from_secs(120)).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(
        st.image_ref.split('@').next(),
        Some("registry.invalid/team/app"),
        "{}",
        st.image_ref
    );
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(
        log.contains(" stdout F pulled through the mirror\n"),
        "{log}"
    );

    let e = c
        .images
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(&id) || e.message().contains("in use"),
        "{e:?}"
    );
    c.runtime
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    c.images
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .expect("RemoveImage");
    c.images
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .expect("RemoveImage again");
    let left = c
        .images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(!left.iter().any(|i| i.id == pulled));
    remove_pod(&mut c, &pod).await;
    d.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blob_is_a_digest_mismatch() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    build_busybox_image(&layout, "v1", &[("/big", &vec![7u8; 1 << 20])], &[]);
    reg.push(&layout, "v1", "bad/app", Compression::Gzip);
    // Flip bytes of the largest blob (the layer) in the registry's storage.
    let blobs = walk(&reg.storage());
    let layer = blobs
        .iter()
        .filter(|p| p.ends_with("data"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a blob");
    let mut data = std::fs::read(layer).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    data[n / 2 + 1] ^= 0xff;
    std::fs::write(layer, data).unwrap();

    let d = Cocoond::start(&format!(
        "[registries.hosts.\"{}\"]\nplain_http = true\n",
        reg.addr()
    ))
    .await;
    let mut c = d.client().await;
    let e = c
        .images
        .pull_image(PullImageRequest {
            image: spec(&format!("{}/bad/app:v1", reg.addr())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("sha256:"), "{e:?}");
    let images = c
        .images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(images
        .iter()
        .all(|i| !i.repo_tags.iter().any(|t| t.contains("bad/app"))));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Credentials come from the PullImage request: without them the registry refuses (a
/// clear Unavailable naming it), with them (username/password, or CRI's base64 `auth`)
/// the pull succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn pull_with_credentials_from_the_request() {
    use cocoon_tests::registry::AUTH_PASSWORD;
    let reg = TestRegistry::start_with_auth("puller");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    build_busybox_image(&layout, "v1", &[], &[]);
    reg.push(&layout, "v1", "private/app", Compression::Gzip);
    let d = Cocoond::start(&format!(
        "[registries.hosts.\"{}\"]\nplain_http = true\n",
        reg.addr()
    ))
    .await;
    let mut c = d.client().await;
    let name = format!("{}/private/app:v1", reg.addr());
    let pull = |auth: Option<AuthConfig>| PullImageRequest {
        image: spec(&name),
        auth,
        ..Default::default()
    };
    let e = c.images.pull_image(pull(None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&reg.addr()), "{e:?}");
    let wrong = AuthConfig {
        username: "puller".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    assert!(c.images.pull_image(pull(Some(wrong))).await.is_err());
    let good = AuthConfig {
        username: "puller".into(),
        password: AUTH_PASSWORD.into(),
        ..Default::default()
    };
    c.images
        .pull_image(pull(Some(good)))
        .await
        .expect("pull with username/password");
    c.images
        .remove_image(RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
    // base64("puller:secret")
    let encoded = AuthConfig {
        auth: "cHVsbGVyOnNlY3JldA==".into(),
        ..Default::default()
    };
    c.images
        .pull_image(pull(Some(encoded)))
        .await
        .expect("pull with auth");
}

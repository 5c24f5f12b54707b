//! Unpacker tests: layer semantics, formats, and (property-tested) containment.

use super::*;
use crate::testutil::{gzip, sha256, zstd, Tar};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

/// Writes each tar (uncompressed, compression sniffed) next to `root` and unpacks them
/// in order into `root`.
fn unpack(root: &Path, tars: &[Vec<u8>]) -> Result<UnpackStats> {
    let blobs = tempfile::tempdir().unwrap();
    let layers: Vec<LayerFile> = tars
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path = blobs.path().join(i.to_string());
            std::fs::write(&path, t).unwrap();
            LayerFile {
                path,
                digest: sha256(t),
                compression: None,
                diff_id: None,
            }
        })
        .collect();
    unpack_layers(&layers, root, u64::MAX)
}

fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn entries_keep_their_metadata() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let layer = Tar::default()
        .mtime(1_234_567_890)
        .dir("./")
        .dir_mode("bin", 0o750)
        .file_mode("bin/tool", b"#!/bin/sh\n", 0o4755)
        .symlink("bin/sh", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .fifo("run.fifo")
        .file("deep/er/file", b"implicit parents")
        .finish();
    let stats = unpack(root, &[layer]).unwrap();
    assert_eq!(stats.entries, 7);
    let tool = std::fs::metadata(root.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(tool.mtime(), 1_234_567_890);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        tool.ino(),
        std::fs::metadata(root.join("bin/tool2")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    let bin = std::fs::metadata(root.join("bin")).unwrap();
    assert_eq!(bin.permissions().mode() & 0o7777, 0o750);
    assert_eq!(bin.mtime(), 1_234_567_890, "directory mtimes set last");
    assert!(std::fs::metadata(root.join("run.fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(read(root, "deep/er/file"), "implicit parents");
    assert_eq!(
        std::fs::metadata(root).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn whiteouts_remove_lower_entries() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let lower = Tar::default()
        .file("etc/keep", b"k")
        .file("etc/gone", b"g")
        .file("var/cache/x/y", b"y")
        .file(".hidden", b"h")
        .finish();
    let upper = Tar::default()
        .whiteout("etc", "gone")
        .whiteout("var", "cache")
        .whiteout("", ".hidden")
        .whiteout("nowhere", "thing")
        .finish();
    unpack(root, &[lower, upper]).unwrap();
    assert_eq!(names(&root.join("etc")), ["keep"]);
    assert!(names(&root.join("var")).is_empty());
    assert!(!root.join(".hidden").exists());
    assert!(!root.join("nowhere").exists(), "whiteouts create nothing");
    assert!(!root.join("etc/.wh.gone").exists());
}

#[test]
fn a_whiteout_never_hides_its_own_layer() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let lower = Tar::default().file("d/f", b"lower").finish();
    let upper = Tar::default()
        .file("d/f", b"upper")
        .whiteout("d", "f")
        .finish();
    unpack(root, &[lower, upper]).unwrap();
    assert_eq!(read(root, "d/f"), "upper");
}

#[test]
fn opaque_dirs_hide_lower_entries_whatever_the_order() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let lower = Tar::default()
        .file("d/lower", b"l")
        .file("d/sub/lower", b"l")
        .file("other/kept", b"k")
        .finish();
    let upper = Tar::default()
        .file("d/before", b"b")
        .file("d/sub/new", b"n")
        .opaque("d")
        .file("d/after", b"a")
        .finish();
    unpack(root, &[lower, upper]).unwrap();
    assert_eq!(names(&root.join("d")), ["after", "before", "sub"]);
    assert_eq!(
        names(&root.join("d/sub")),
        ["new"],
        "lower content of sub hidden too"
    );
    assert_eq!(read(root, "other/kept"), "k");
    assert!(!root.join("d/.wh..wh..opq").exists());
}

#[test]
fn upper_layers_replace_types() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let lower = Tar::default()
        .file("a", b"file")
        .file("b/inner", b"dir")
        .symlink("c", "/etc")
        .finish();
    let upper = Tar::default()
        .dir("a")
        .file("b", b"now a file")
        .dir("c")
        .finish();
    unpack(root, &[lower, upper]).unwrap();
    assert!(root.join("a").is_dir());
    assert_eq!(read(root, "b"), "now a file");
    let c = std::fs::symlink_metadata(root.join("c")).unwrap();
    assert!(c.is_dir(), "the symlink was replaced, not followed");
}

#[test]
fn symlinked_parents_resolve_inside_the_rootfs() {
    let sentinel = tempfile::tempdir().unwrap();
    let root = sentinel.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let host = sentinel.path().to_str().unwrap().to_owned();
    let layer1 = Tar::default()
        .dir("etc")
        .symlink("a", "/etc")
        .symlink("up", "../../../..")
        .symlink("host", &host)
        .finish();
    let layer2 = Tar::default()
        .file("a/passwd", b"image passwd")
        .file("up/escaped", b"x")
        .file("host/escaped", b"x")
        .hardlink("a/shadow", "/a/passwd")
        .finish();
    unpack(&root, &[layer1, layer2]).unwrap();
    assert_eq!(read(&root, "etc/passwd"), "image passwd");
    assert_eq!(read(&root, "etc/shadow"), "image passwd");
    assert_eq!(read(&root, "escaped"), "x");
    assert!(root
        .join(host.trim_start_matches('/'))
        .join("escaped")
        .exists());
    assert_eq!(
        names(sentinel.path()),
        ["rootfs"],
        "nothing outside the rootfs"
    );
}

#[test]
fn escaping_names_and_links_are_refused() {
    let sentinel = tempfile::tempdir().unwrap();
    std::fs::write(sentinel.path().join("outside"), b"o").unwrap();
    let root = sentinel.path().join("rootfs");
    for layer in [
        Tar::default().file("../outside", b"x").finish(),
        Tar::default().file("a/../../outside", b"x").finish(),
        Tar::default().hardlink("h", "../outside").finish(),
        Tar::default().hardlink("h", "/missing").finish(),
        Tar::default().dir("d").hardlink("h", "d").finish(),
        Tar::default().file("../.wh.outside", b"").finish(),
        Tar::default().file("d/.wh..", b"").finish(),
        Tar::default().file("f", b"").file("f/under", b"").finish(),
    ] {
        std::fs::create_dir(&root).unwrap();
        let e = unpack(&root, &[layer]).unwrap_err();
        assert!(matches!(e, ImageError::Format { .. }), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(read(sentinel.path(), "outside"), "o");
    }
}

#[test]
fn gzip_zstd_and_plain_layers() {
    let t = tempfile::tempdir().unwrap();
    let blobs = tempfile::tempdir().unwrap();
    let tars = [
        Tar::default().file("one", b"1").finish(),
        Tar::default().file("two", b"2").finish(),
        Tar::default().file("three", b"3").finish(),
    ];
    let data = [gzip(&tars[0]), zstd(&tars[1]), tars[2].clone()];
    let hints = [Some(Compression::Gzip), None, None];
    let layers: Vec<LayerFile> = (0..3)
        .map(|i| {
            let path = blobs.path().join(i.to_string());
            std::fs::write(&path, &data[i]).unwrap();
            LayerFile {
                path,
                digest: sha256(&data[i]),
                compression: hints[i],
                diff_id: Some(sha256(&tars[i])),
            }
        })
        .collect();
    unpack_layers(&layers, t.path(), u64::MAX).unwrap();
    assert_eq!(names(t.path()), ["one", "three", "two"]);

    let mut bad = layers[1].clone();
    bad.diff_id = Some(sha256(b"another tar"));
    let e = unpack_layers(&[bad], tempfile::tempdir().unwrap().path(), u64::MAX).unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");

    let e = unpack_layers(&layers, tempfile::tempdir().unwrap().path(), 2).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn garbage_is_a_format_error() {
    let t = tempfile::tempdir().unwrap();
    let e = unpack(
        t.path(),
        &[b"definitely not a tar archive, but long enough?".repeat(20)],
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::Format { .. }), "{e}");
    let e = unpack(t.path(), &[gzip(b"x")[..10].to_vec()]).unwrap_err();
    assert!(matches!(e, ImageError::Format { .. }), "{e}");
}

mod containment {
    //! Random layers of hostile entries never touch anything outside the rootfs.

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Names that matter: ordinary, `..`, `.`, and one that exists outside.
    const COMPONENTS: &[&str] = &["a", "b", "..", ".", "canary", "etc"];

    #[derive(Debug, Clone)]
    enum Op {
        Dir(String),
        File(String),
        Symlink(String, String),
        Hardlink(String, String),
        Whiteout(String, String),
        Opaque(String),
    }

    fn path() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop::collection::vec(prop::sample::select(COMPONENTS), 1..4),
        )
            .prop_map(|(abs, c)| format!("{}{}", if abs { "/" } else { "" }, c.join("/")))
    }

    /// Symlink targets: relative and absolute paths, and ones naming the sentinel and
    /// the host root (filled in per run: `@SENTINEL`).
    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            path(),
            Just("/".to_owned()),
            Just("../../..".to_owned()),
            Just("@SENTINEL".to_owned()),
            Just("@SENTINEL/canary".to_owned()),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            path().prop_map(Op::Dir),
            path().prop_map(Op::File),
            (path(), target()).prop_map(|(p, t)| Op::Symlink(p, t)),
            (path(), target()).prop_map(|(p, t)| Op::Hardlink(p, t)),
            (path(), prop::sample::select(COMPONENTS))
                .prop_map(|(d, n)| Op::Whiteout(d, n.to_owned())),
            path().prop_map(Op::Opaque),
        ]
    }

    fn layer_tar(ops: &[Op], sentinel: &str) -> Vec<u8> {
        let fill = |t: &str| t.replace("@SENTINEL", sentinel);
        let mut tar = Tar::default();
        for op in ops {
            tar = match op {
                Op::Dir(p) => tar.dir(p),
                Op::File(p) => tar.file(p, b"written by a layer"),
                Op::Symlink(p, t) => tar.symlink(p, &fill(t)),
                Op::Hardlink(p, t) => tar.hardlink(p, &fill(t)),
                Op::Whiteout(d, n) => tar.whiteout(d, n),
                Op::Opaque(d) => tar.opaque(d),
            };
        }
        tar.finish()
    }

    /// Everything under `dir` but `skip`: path → (kind, content, mode, mtime, inode,
    /// link count; a hardlink from inside the target shows in the last).
    type Snapshot = BTreeMap<PathBuf, (String, Vec<u8>, u32, i64, u64, u64)>;

    fn snapshot(dir: &Path, skip: &Path) -> Snapshot {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p == skip {
                    continue;
                }
                let md = std::fs::symlink_metadata(&p).unwrap();
                let (kind, content) = if md.is_dir() {
                    stack.push(p.clone());
                    ("dir".to_owned(), Vec::new())
                } else if md.file_type().is_symlink() {
                    (
                        "symlink".to_owned(),
                        std::fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                    )
                } else {
                    ("file".to_owned(), std::fs::read(&p).unwrap())
                };
                out.insert(
                    p,
                    (kind, content, md.mode(), md.mtime(), md.ino(), md.nlink()),
                );
            }
        }
        out
    }

    /// Top-level names a broken unpacker could create on the host.
    const HOST_PROBES: &[&str] = &["/a", "/b", "/canary"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn nothing_outside_the_target_changes(
            layers in prop::collection::vec(prop::collection::vec(op(), 1..12), 1..4)
        ) {
            let host_before: Vec<bool> = HOST_PROBES.iter().map(|p| Path::new(p).exists()).collect();
            let sentinel = tempfile::tempdir().unwrap();
            let s = sentinel.path();
            std::fs::write(s.join("canary"), b"canary").unwrap();
            std::fs::create_dir(s.join("etc")).unwrap();
            std::fs::write(s.join("etc/a"), b"sentinel etc").unwrap();
            let root = s.join("target");
            std::fs::create_dir(&root).unwrap();
            let before = snapshot(s, &root);

            let tars: Vec<Vec<u8>> = layers.iter().map(|ops| layer_tar(ops, s.to_str().unwrap())).collect();
            // Refusing a hostile layer is fine; panicking or escaping is not.
            let _ = unpack(&root, &tars);

            prop_assert_eq!(snapshot(s, &root), before);
            let host_after: Vec<bool> = HOST_PROBES.iter().map(|p| Path::new(p).exists()).collect();
            prop_assert_eq!(host_after, host_before);
        }
    }
}

#[test]
fn blank_numeric_fields_read_as_zero() {
    // Go's archive/tar, and hand-made layers, leave uid/gid/mtime blank.
    let mut h = tar::Header::new_gnu();
    h.set_path("blank").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o640);
    h.set_size(1);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"x"[..]).unwrap();
    let t = tempfile::tempdir().unwrap();
    unpack(t.path(), &[b.into_inner().unwrap()]).unwrap();
    let md = std::fs::metadata(t.path().join("blank")).unwrap();
    assert_eq!(md.mtime(), 0);
    assert_eq!(md.permissions().mode() & 0o777, 0o640);
}

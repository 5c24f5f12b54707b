//! Keeping every layer entry inside the rootfs being built.
//!
//! Two steps, both done by us rather than trusted to the tar crate:
//!
//! 1. [`entry_components`] cleans an entry name lexically: a leading `/` and `.`
//!    components are dropped, `a/../b` becomes `b`, and a name that climbs above the
//!    root (`../x`, `a/../../x`) is refused.
//! 2. [`resolve_dir`] walks the parent directories component by component with
//!    `lstat`, following symlinks *as if the rootfs were `/`* (the way the container
//!    will see them): an absolute target restarts at the rootfs, `..` at the rootfs
//!    stays there. So a layer with `a -> /etc` and then `a/passwd` writes the image's
//!    own `/etc/passwd`, never the host's.
//!
//! The final component is never followed: callers create it with no-follow calls
//! (`O_CREAT|O_EXCL`, `mkdir`, `symlink`, `linkat` without `AT_SYMLINK_FOLLOW`,
//! `lchown`, `utimensat(AT_SYMLINK_NOFOLLOW)`). The unpacker is the only writer of the
//! tree while it is built (a fresh temp dir of the store), so what `lstat` saw stays
//! true until the entry is written.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Why a path could not be resolved inside the root.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The name or a symlink on the way is malformed, loops, or crosses a non-directory.
    Invalid(String),
    /// A filesystem call failed.
    Io(PathBuf, std::io::Error),
}

/// The cleaned components of a tar entry name, relative to the root (empty for the
/// root itself).
pub(crate) fn entry_components(name: &Path) -> Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = Vec::new();
    for c in name.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => return Err("path prefix".into()),
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err("climbs above the root".into());
                }
            }
            Component::Normal(n) => {
                if n.as_bytes().contains(&0) {
                    return Err("NUL in name".into());
                }
                out.push(n.to_owned());
            }
        }
    }
    Ok(out)
}

/// Resolves the directory `components` under `root`, following symlinks inside the
/// root, and returns its physical path relative to `root` (no symlinks in it; every
/// component an existing directory). Missing directories are created (mode 0755) when
/// `create` is set, and reported as `Ok(None)` otherwise.
pub(crate) fn resolve_dir(
    root: &Path,
    components: &[OsString],
    create: bool,
) -> Result<Option<PathBuf>, ResolveError> {
    let mut pending: Vec<OsString> = components.iter().rev().cloned().collect();
    let mut physical: Vec<OsString> = Vec::new();
    let mut followed = 0usize;
    while let Some(c) = pending.pop() {
        if c == OsStr::new(".") || c.is_empty() {
            continue;
        }
        if c == OsStr::new("..") {
            physical.pop();
            continue;
        }
        let mut path = root.to_path_buf();
        path.extend(&physical);
        path.push(&c);
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => physical.push(c),
            Ok(md) if md.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(ResolveError::Invalid(format!(
                        "too many levels of symlinks at {}",
                        rel_display(&physical, &c)
                    )));
                }
                let target =
                    std::fs::read_link(&path).map_err(|e| ResolveError::Io(path.clone(), e))?;
                if target.as_os_str().is_empty() {
                    return Err(ResolveError::Invalid(format!(
                        "empty symlink at {}",
                        rel_display(&physical, &c)
                    )));
                }
                if target.is_absolute() {
                    physical.clear();
                }
                // Target components go in front of what is left, in order.
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                    }
                }
            }
            Ok(_) => {
                return Err(ResolveError::Invalid(format!(
                    "{} is not a directory",
                    rel_display(&physical, &c)
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                std::fs::create_dir(&path).map_err(|e| ResolveError::Io(path.clone(), e))?;
                physical.push(c);
            }
            Err(e) => return Err(ResolveError::Io(path, e)),
        }
    }
    Ok(Some(physical.iter().collect()))
}

fn rel_display(physical: &[OsString], c: &OsStr) -> String {
    let mut p: PathBuf = physical.iter().collect();
    p.push(c);
    format!("/{}", p.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(s: &str) -> Vec<OsString> {
        entry_components(Path::new(s)).unwrap()
    }

    #[test]
    fn names_are_cleaned_and_never_climb() {
        assert_eq!(comps("./a/b/"), vec![OsString::from("a"), "b".into()]);
        assert_eq!(
            comps("/etc/passwd"),
            vec![OsString::from("etc"), "passwd".into()]
        );
        assert_eq!(comps("a/../b"), vec![OsString::from("b")]);
        assert!(comps("./").is_empty());
        for bad in ["..", "../x", "a/../../x", "/../x", "./.."] {
            assert!(entry_components(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        symlink("file", root.join("tofile")).unwrap();

        let r = |s: &str, create| resolve_dir(root, &comps(s), create);
        assert_eq!(r("abs", false).unwrap().unwrap(), PathBuf::from("etc"));
        assert_eq!(r("up", false).unwrap().unwrap(), PathBuf::new());
        assert_eq!(r("up/etc", false).unwrap().unwrap(), PathBuf::from("etc"));
        assert_eq!(r("lib", false).unwrap().unwrap(), PathBuf::from("usr/lib"));
        assert_eq!(
            r("usr/lib", false).unwrap().unwrap(),
            PathBuf::from("usr/lib")
        );
        assert!(r("missing/x", false).unwrap().is_none());
        assert_eq!(
            r("abs/new/deeper", true).unwrap().unwrap(),
            PathBuf::from("etc/new/deeper")
        );
        assert!(root.join("etc/new/deeper").is_dir());
        assert!(
            matches!(r("loop", false), Err(ResolveError::Invalid(m)) if m.contains("symlinks"))
        );
        assert!(
            matches!(r("file/x", true), Err(ResolveError::Invalid(m)) if m.contains("not a directory"))
        );
        assert!(matches!(r("tofile", true), Err(ResolveError::Invalid(_))));
    }

    #[test]
    fn a_symlink_to_the_host_root_stays_in_the_root() {
        let sentinel = tempfile::tempdir().unwrap();
        let root = sentinel.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // The host path of the sentinel, as an absolute target: inside the rootfs it
        // names <root>/<that path>, which is created there, not on the host.
        symlink(sentinel.path(), root.join("host")).unwrap();
        let rel = resolve_dir(&root, &comps("host/x"), true).unwrap().unwrap();
        assert!(rel.is_relative());
        assert!(root.join(&rel).is_dir());
        assert!(!sentinel.path().join("x").exists());
    }
}

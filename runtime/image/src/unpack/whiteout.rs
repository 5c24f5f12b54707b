//! OCI whiteouts: `.wh.<name>` removes `<name>` of the lower layers; `.wh..wh..opq`
//! makes its directory opaque, hiding every lower-layer entry in it.
//!
//! Whiteouts only ever hide *lower* layers (image-spec, "Whiteouts"): entries of the
//! same layer stay, whatever their order in the tar. The unpacker records every path the
//! current layer wrote, and the directories above them, in a [`Touched`] set;
//! [`remove_lower`] deletes what is not in it and descends into what is.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`), never meant to be unpacked.
const META_PREFIX: &[u8] = b".wh..wh.";

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout {
    /// Not a whiteout: an ordinary entry.
    No,
    /// `.wh.<name>`: remove `<name>` from the lower layers.
    Remove(OsString),
    /// `.wh..wh..opq`: hide the lower layers' content of the directory.
    Opaque,
    /// Other `.wh..wh.` names (aufs metadata): skipped.
    Meta,
}

/// Classifies the last component of an entry name.
pub(crate) fn classify(name: &OsStr) -> Result<Whiteout, String> {
    let b = name.as_bytes();
    if b == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if b.starts_with(META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    match b.strip_prefix(PREFIX) {
        None => Ok(Whiteout::No),
        Some(target) if target.is_empty() || target == b"." || target == b".." => {
            Err(format!("invalid whiteout {:?}", name.to_string_lossy()))
        }
        Some(target) => Ok(Whiteout::Remove(OsStr::from_bytes(target).to_owned())),
    }
}

/// The physical paths (relative to the root) the current layer wrote, with every
/// directory above them.
#[derive(Debug, Default)]
pub(crate) struct Touched(HashSet<PathBuf>);

impl Touched {
    pub fn insert(&mut self, rel: &Path) {
        let mut p = rel.to_path_buf();
        loop {
            if !self.0.insert(p.clone()) {
                return; // its ancestors are in already
            }
            if !p.pop() {
                return;
            }
        }
    }

    pub fn contains(&self, rel: &Path) -> bool {
        self.0.contains(rel)
    }
}

/// Removes `root/rel` as far as lower layers made it: entirely when the current layer
/// did not touch it, else only the untouched entries below it.
pub(crate) fn remove_lower(root: &Path, rel: &Path, touched: &Touched) -> std::io::Result<()> {
    let abs = root.join(rel);
    let md = match std::fs::symlink_metadata(&abs) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !touched.contains(rel) {
        return if md.is_dir() {
            std::fs::remove_dir_all(&abs)
        } else {
            std::fs::remove_file(&abs)
        };
    }
    if md.is_dir() {
        remove_lower_children(root, rel, touched)?;
    }
    Ok(())
}

/// [`remove_lower`] on every entry of the directory `root/rel` (an opaque directory).
pub(crate) fn remove_lower_children(
    root: &Path,
    rel: &Path,
    touched: &Touched,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        remove_lower(root, &rel.join(entry.file_name()), touched)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let c = |s: &str| classify(OsStr::new(s));
        assert_eq!(c("file").unwrap(), Whiteout::No);
        assert_eq!(c(".whatever").unwrap(), Whiteout::No);
        assert_eq!(c(".wh.file").unwrap(), Whiteout::Remove("file".into()));
        assert_eq!(
            c(".wh..hidden").unwrap(),
            Whiteout::Remove(".hidden".into())
        );
        assert_eq!(c(".wh..wh..opq").unwrap(), Whiteout::Opaque);
        assert_eq!(c(".wh..wh.plnk").unwrap(), Whiteout::Meta);
        for bad in [".wh.", ".wh..", ".wh..."] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn touched_entries_survive_removal() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for f in ["d/lower", "d/sub/lower", "d/sub/upper", "d/upper"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        let mut touched = Touched::default();
        touched.insert(Path::new("d/sub/upper"));
        touched.insert(Path::new("d/upper"));
        assert!(touched.contains(Path::new("d")));
        assert!(touched.contains(Path::new("")));
        remove_lower_children(root, Path::new("d"), &touched).unwrap();
        assert!(root.join("d/upper").exists());
        assert!(root.join("d/sub/upper").exists());
        assert!(!root.join("d/lower").exists());
        assert!(!root.join("d/sub/lower").exists());
        remove_lower(root, Path::new("d/missing"), &touched).unwrap();
    }
}

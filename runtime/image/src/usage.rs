//! Disk usage of the store, for CRI `ImageFsInfo`.

use crate::image::FsUsage;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Allocated bytes and inodes under `root`, each hardlinked inode counted once. Entries
/// that vanish during the walk are skipped.
pub(crate) fn measure(root: &Path) -> FsUsage {
    let mut used_bytes = 0u64;
    let mut inodes_used = 0u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        used_bytes += md.blocks() * 512;
        inodes_used += 1;
        if md.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    FsUsage {
        root: root.to_path_buf(),
        bytes: used_bytes,
        inodes: inodes_used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_inodes_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(t.path().join("d/f"), t.path().join("g")).unwrap();
        let u = measure(t.path());
        assert_eq!(u.inodes, 3, "root, d, f (g is f)");
        assert!(u.bytes >= 10_000, "{u:?}");
        assert_eq!(u.root, t.path());
    }
}

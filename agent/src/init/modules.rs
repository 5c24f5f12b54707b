//! Loads the kernel modules an image ships (distribution kernels; ours has none).

use nix::kmod::{finit_module, ModuleInitFlags};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Module paths from a list file: one absolute path a line, `#` comments, blanks skipped.
pub fn parse_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .collect()
}

/// Loads every module of the list at `list` in order; returns the names loaded. A missing
/// list means the kernel needs none. A module already present (EEXIST) counts as loaded.
pub fn load_listed(list: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(list) else {
        return Vec::new();
    };
    let mut loaded = Vec::new();
    for path in parse_list(&text) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match load_one(&path) {
            Ok(()) | Err(nix::Error::EEXIST) => loaded.push(name),
            Err(e) => tracing::warn!(module = %path.display(), "load failed: {e}"),
        }
    }
    loaded
}

fn load_one(path: &Path) -> nix::Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(nix::libc::ENOENT)))?;
    let no_params = CString::default();
    finit_module(&file, &no_params, ModuleInitFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keeps_order_and_skips_noise() {
        let text = "# deps first\n/lib/modules/a.ko\n\n  /lib/modules/b.ko  \nrelative.ko\n";
        assert_eq!(
            parse_list(text),
            vec![
                PathBuf::from("/lib/modules/a.ko"),
                PathBuf::from("/lib/modules/b.ko")
            ]
        );
    }

    #[test]
    fn missing_list_loads_nothing() {
        assert!(load_listed(Path::new("/nonexistent/cocoon/modules.list")).is_empty());
    }
}

//! Where the guest kernel, initramfs and the vsock device binary are found by default.

use std::path::{Path, PathBuf};

/// The kernel and initramfs `guest-image/build.sh` produces.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Kernel file names in order of preference: our PVH vmlinux, a distribution bzImage.
const KERNELS: [&str; 2] = ["vmlinux", "vmlinuz"];
const INITRD: &str = "initramfs.img";

impl GuestImage {
    /// The image in `dir`, if it holds one.
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let initrd = dir.join(INITRD);
        let kernel = KERNELS.iter().map(|k| dir.join(k)).find(|p| p.is_file())?;
        initrd.is_file().then_some(Self { kernel, initrd })
    }

    /// The first image found: `$COCOON_GUEST_IMAGE`, then beside the running binary
    /// (`target/<profile>/../guest-image` in a build tree), then the install locations.
    pub fn locate() -> Result<Self, String> {
        let candidates = candidate_dirs();
        candidates
            .iter()
            .find_map(|d| Self::in_dir(d))
            .ok_or_else(|| {
                format!(
                    "no guest image (vmlinux + {INITRD}) in {}; build one with guest-image/build.sh",
                    candidates
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("COCOON_GUEST_IMAGE") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(exe_dir) = exe_dir() {
        dirs.push(exe_dir.join("../guest-image"));
        dirs.push(exe_dir.join("../../guest-image"));
    }
    dirs.push("/usr/local/share/cocoon/guest-image".into());
    dirs.push("/usr/share/cocoon/guest-image".into());
    dirs
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// The vsock device binary: beside the running binary (or its parent, for test binaries
/// in `target/<profile>/deps`), else `cocoon-vsock` from PATH.
pub fn vsock_backend() -> PathBuf {
    exe_dir()
        .into_iter()
        .flat_map(|d| [d.join("cocoon-vsock"), d.join("../cocoon-vsock")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| "cocoon-vsock".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_needs_both_files() {
        let d = tempfile::tempdir().unwrap();
        assert!(GuestImage::in_dir(d.path()).is_none());
        std::fs::write(d.path().join("vmlinux"), b"k").unwrap();
        assert!(GuestImage::in_dir(d.path()).is_none());
        std::fs::write(d.path().join(INITRD), b"i").unwrap();
        let img = GuestImage::in_dir(d.path()).unwrap();
        assert!(img.kernel.ends_with("vmlinux"));
    }
}

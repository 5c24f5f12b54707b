//! The pod's shared filesystem: one host directory served to the guest as virtio-fs by
//! `virtiofsd`, a vhost-user device process beside QEMU (like `cocoon-vsock`).
//!
//! ```text
//! host_dir/ ──► virtiofsd --shared-dir host_dir --socket-path <run>/virtiofs.sock
//!                  ▲ vhost-user (guest RAM is the shared memfd)
//!               qemu -chardev socket,id=fs0,path=<run>/virtiofs.sock
//!                    -device vhost-user-fs-device,chardev=fs0,tag=<tag>
//! guest:        mount -t virtiofs <tag> <mount point>   (the agent, at CreateSandbox)
//! ```
//!
//! The runtime bind-mounts image rootfs (read-only) and volumes under `host_dir` while
//! the VM runs; the options below make those later mounts reach the guest.

use crate::config::{find_program, ConfigError};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The longest tag the virtio-fs device config holds (bytes).
pub const MAX_TAG_BYTES: usize = 36;

/// How to install virtiofsd, for the error that says it is missing.
pub const VIRTIOFSD_INSTALL: &str =
    "install it with `cargo install virtiofsd --version 1.14.0 --locked` (scripts/setup.sh does)";

/// One host directory shared into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFsConfig {
    /// An existing absolute directory on the host.
    pub host_dir: PathBuf,
    /// The virtio-fs tag the guest mounts it by (≤ 36 bytes, printable ASCII, no space).
    pub tag: String,
}

impl SharedFsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let dir_err = |why: String| ConfigError::SharedFsDir {
            path: self.host_dir.clone(),
            why,
        };
        if !self.host_dir.is_absolute() {
            return Err(dir_err("must be absolute".into()));
        }
        match std::fs::metadata(&self.host_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(dir_err("is not a directory".into())),
            Err(e) => return Err(dir_err(e.to_string())),
        }
        let tag_err = |why: &'static str| ConfigError::SharedFsTag {
            tag: self.tag.clone(),
            why,
        };
        if self.tag.is_empty() {
            return Err(tag_err("must not be empty"));
        }
        if self.tag.len() > MAX_TAG_BYTES {
            return Err(tag_err("is longer than 36 bytes"));
        }
        if !self.tag.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(tag_err("must be printable ASCII without spaces"));
        }
        Ok(())
    }
}

/// Where virtiofsd is looked for when the config names none: PATH, then where `cargo
/// install` and distributions put it.
pub fn default_locations() -> Vec<PathBuf> {
    let mut places = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        places.push(PathBuf::from(home).join(".cargo/bin/virtiofsd"));
    }
    places.push("/usr/libexec/virtiofsd".into());
    places.push("/usr/lib/qemu/virtiofsd".into());
    places
}

/// The virtiofsd to run: the configured one (a name looked up in PATH, or a path), or
/// the first found of PATH and [`default_locations`].
pub fn find_virtiofsd(configured: Option<&Path>) -> Result<PathBuf, ConfigError> {
    match configured {
        Some(p) => {
            find_program(p).ok_or_else(|| ConfigError::VirtiofsdMissing(p.display().to_string()))
        }
        None => find_program(Path::new("virtiofsd"))
            .or_else(|| {
                default_locations()
                    .into_iter()
                    .find_map(|p| find_program(&p))
            })
            .ok_or_else(|| {
                let mut places = vec!["PATH".to_string()];
                places.extend(default_locations().iter().map(|p| p.display().to_string()));
                ConfigError::VirtiofsdMissing(format!("not in {}", places.join(", ")))
            }),
    }
}

/// virtiofsd's arguments (1.14). Why each:
///
/// - `--sandbox chroot`: virtiofsd stays in the runtime's mount namespace and only
///   chroots into `host_dir`, so bind mounts the runtime adds under `host_dir` after the
///   start (image rootfs, volumes) are seen. The default `namespace` sandbox pivots
///   into a private copy of the mount namespace taken at start and would miss them.
///   Needs root (CAP_SYS_CHROOT), as the runtime has.
/// - `--announce-submounts`: each mount under `host_dir` is its own submount in the
///   guest (its own st_dev), so inode numbers of different host filesystems never
///   collide. (A read-only bind is read-only either way: the host answers EROFS.)
/// - `--cache auto`: the guest keeps attributes and names for 1 s and file data until
///   the file is opened again (close-to-open), so host changes to a volume are seen at
///   the next open; writes go through to the host file before the guest's `write()`
///   returns (no `--writeback`), so the host sees volume writes at once. `always` would
///   serve stale pages of files changed on the host; `never` fetches every read from
///   the host.
/// - `--thread-pool-size 1`: one worker; a pod's I/O does not need more threads, and
///   each costs host memory.
/// - `--log-level warn`: virtiofsd's info lines are per connection, not useful.
///
/// No `--tag`: QEMU 7.1–8.0 crash when the backend offers the config feature; QEMU's
/// device carries the tag instead.
pub fn virtiofsd_args(host_dir: &Path, socket: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--shared-dir".into(),
        host_dir.into(),
        "--socket-path".into(),
        socket.into(),
    ];
    args.extend(
        [
            "--sandbox",
            "chroot",
            "--announce-submounts",
            "--cache",
            "auto",
            "--thread-pool-size",
            "1",
            "--log-level",
            "warn",
        ]
        .map(OsString::from),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(dir: &Path, tag: &str) -> SharedFsConfig {
        SharedFsConfig {
            host_dir: dir.to_path_buf(),
            tag: tag.into(),
        }
    }

    #[test]
    fn host_dir_must_be_an_existing_absolute_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(fs(d.path(), "pod").validate().is_ok());
        let e = fs(Path::new("rel/dir"), "pod").validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "shared_fs.host_dir: rel/dir must be absolute"
        );
        let e = fs(&d.path().join("nope"), "pod")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("shared_fs.host_dir: ") && e.contains("No such file"),
            "{e}"
        );
        let file = d.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let e = fs(&file, "pod").validate().unwrap_err().to_string();
        assert!(e.ends_with("is not a directory"), "{e}");
    }

    #[test]
    fn tags_are_short_and_printable() {
        let d = tempfile::tempdir().unwrap();
        assert!(fs(d.path(), &"t".repeat(36)).validate().is_ok());
        assert!(fs(d.path(), "a,b=c").validate().is_ok());
        for (bad, why) in [
            ("", "must not be empty"),
            (&"t".repeat(37) as &str, "longer than 36"),
            ("a b", "printable"),
            ("a\nb", "printable"),
            ("é", "printable"),
        ] {
            let e = fs(d.path(), bad).validate().unwrap_err().to_string();
            assert!(
                e.starts_with("shared_fs.tag: ") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn a_missing_virtiofsd_says_how_to_install_it() {
        let e = find_virtiofsd(Some(Path::new("/nonexistent/virtiofsd")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("virtiofsd: /nonexistent/virtiofsd"), "{e}");
        assert!(
            e.contains("cargo install virtiofsd --version 1.14.0 --locked"),
            "{e}"
        );
        let sh = find_virtiofsd(Some(Path::new("sh"))).unwrap();
        assert!(sh.is_absolute());
    }

    #[test]
    fn virtiofsd_sees_later_mounts() {
        let args: Vec<String> =
            virtiofsd_args(Path::new("/srv/pod"), Path::new("/run/x/virtiofs.sock"))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect();
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(after("--shared-dir"), "/srv/pod");
        assert_eq!(after("--socket-path"), "/run/x/virtiofs.sock");
        assert_eq!(after("--sandbox"), "chroot");
        assert_eq!(after("--cache"), "auto");
        assert!(args.contains(&"--announce-submounts".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--tag")));
    }
}

//! Applying one layer's tar entries onto the rootfs being built.

use super::safe_path::{entry_components, resolve_dir, ResolveError};
use super::whiteout::{classify, remove_lower, remove_lower_children, Touched, Whiteout};
use crate::error::{ImageError, IoContext, Result};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

/// Counts of what was unpacked.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UnpackStats {
    pub entries: u64,
    /// Bytes of regular file content written.
    pub file_bytes: u64,
    /// Device nodes we were not permitted to create (not running as root).
    pub skipped_devices: u64,
}

/// Applies layers, in order, onto `root`. Directory mtimes are set once at the end
/// ([`finish`](Self::finish)), since later entries and layers change them.
pub(crate) struct Applier {
    root: PathBuf,
    is_root: bool,
    max_file_bytes: u64,
    dir_mtimes: HashMap<PathBuf, u64>,
    pub stats: UnpackStats,
}

/// The header fields an entry's metadata comes from.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Applier {
    pub fn new(root: &Path, max_file_bytes: u64) -> Self {
        Applier {
            root: root.to_path_buf(),
            is_root: nix::unistd::geteuid().is_root(),
            max_file_bytes,
            dir_mtimes: HashMap::new(),
            stats: UnpackStats::default(),
        }
    }

    /// Applies every entry of the tar stream `reader`; `what` names the layer in errors.
    /// Returns the reader, positioned after the last entry.
    pub fn apply_layer<R: Read>(&mut self, reader: R, what: &str) -> Result<R> {
        let mut archive = tar::Archive::new(reader);
        let mut touched = Touched::default();
        let entries = archive.entries().map_err(|e| ImageError::format(what, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::format(what, e))?;
            self.apply_entry(&mut entry, &mut touched, what)?;
            self.stats.entries += 1;
        }
        Ok(archive.into_inner())
    }

    /// Sets the directory mtimes recorded along the way.
    pub fn finish(self) -> Result<UnpackStats> {
        for (rel, mtime) in &self.dir_mtimes {
            let abs = self.root.join(rel);
            // A later layer may have replaced or removed it.
            if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
                set_mtime(&abs, *mtime)?;
            }
        }
        Ok(self.stats)
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        touched: &mut Touched,
        what: &str,
    ) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let name = entry
            .path()
            .map_err(|e| ImageError::format(what, format!("entry name: {e}")))?
            .into_owned();
        let bad = |reason: &dyn std::fmt::Display| {
            ImageError::format(what, format!("entry {:?}: {reason}", name.display()))
        };
        let comps = entry_components(&name).map_err(|r| bad(&r))?;
        let meta = read_meta(entry).map_err(|e| bad(&e))?;
        let Some((last, parents)) = comps.split_last() else {
            // The root itself ("./"): only its metadata.
            if kind != EntryType::Directory {
                return Err(bad(&"the root must be a directory"));
            }
            let root = self.root.clone();
            self.set_owner_mode(&root, &meta)?;
            self.dir_mtimes.insert(PathBuf::new(), meta.mtime);
            return Ok(());
        };
        match classify(last).map_err(|r| bad(&r))? {
            Whiteout::No => {}
            Whiteout::Meta => return Ok(()),
            Whiteout::Remove(target) => {
                let Some(dir) = self
                    .resolve(parents, false)
                    .map_err(|e| self.resolve_err(e, &bad))?
                else {
                    return Ok(()); // nothing below to remove
                };
                let rel = dir.join(target);
                return remove_lower(&self.root, &rel, touched).ctx("remove", self.root.join(&rel));
            }
            Whiteout::Opaque => {
                let dir = self.resolve_created(parents, &bad)?;
                touched.insert(&dir);
                return remove_lower_children(&self.root, &dir, touched)
                    .ctx("clear", self.root.join(&dir));
            }
        }
        let dir = self.resolve_created(parents, &bad)?;
        let rel = dir.join(last);
        let abs = self.root.join(&rel);
        match kind {
            EntryType::Directory => {
                match std::fs::symlink_metadata(&abs) {
                    Ok(md) if md.is_dir() => {}
                    _ => {
                        clear(&abs)?;
                        std::fs::create_dir(&abs).ctx("create directory", &abs)?;
                    }
                }
                self.set_owner_mode(&abs, &meta)?;
                self.dir_mtimes.insert(rel.clone(), meta.mtime);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                clear(&abs)?;
                self.write_file(entry, &abs, what)?;
                self.set_owner_mode(&abs, &meta)?;
                set_mtime(&abs, meta.mtime)?;
            }
            EntryType::Symlink => {
                let target = link_name(entry).map_err(|e| bad(&e))?;
                clear(&abs)?;
                std::os::unix::fs::symlink(&target, &abs).ctx("create symlink", &abs)?;
                self.set_owner(&abs, &meta)?;
                set_mtime(&abs, meta.mtime)?;
            }
            EntryType::Link => {
                let target = link_name(entry).map_err(|e| bad(&e))?;
                let target = self
                    .hardlink_target(&target)
                    .map_err(|r| bad(&format!("hardlink: {r}")))?;
                if target != abs {
                    clear(&abs)?;
                    std::fs::hard_link(&target, &abs).ctx("create hardlink", &abs)?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                clear(&abs)?;
                if self
                    .make_node(entry, kind, &abs, &meta)
                    .map_err(|e| bad(&e))?
                {
                    self.set_owner_mode(&abs, &meta)?;
                    set_mtime(&abs, meta.mtime)?;
                } else {
                    return Ok(()); // skipped: not touched
                }
            }
            other => {
                tracing::debug!(layer = what, entry = %name.display(), kind = ?other, "skipping entry of unsupported type");
                return Ok(());
            }
        }
        touched.insert(&rel);
        Ok(())
    }

    fn resolve(&self, comps: &[OsString], create: bool) -> Result<Option<PathBuf>, ResolveError> {
        resolve_dir(&self.root, comps, create)
    }

    fn resolve_err(
        &self,
        e: ResolveError,
        bad: &dyn Fn(&dyn std::fmt::Display) -> ImageError,
    ) -> ImageError {
        match e {
            ResolveError::Invalid(r) => bad(&r),
            ResolveError::Io(path, e) => ImageError::io("resolve", path, e),
        }
    }

    fn resolve_created(
        &self,
        comps: &[OsString],
        bad: &dyn Fn(&dyn std::fmt::Display) -> ImageError,
    ) -> Result<PathBuf> {
        self.resolve(comps, true)
            .map_err(|e| self.resolve_err(e, bad))?
            .ok_or_else(|| bad(&"parent directory missing"))
    }

    /// The physical path of an existing non-directory a hardlink may point at.
    fn hardlink_target(&self, target: &Path) -> Result<PathBuf, String> {
        let comps = entry_components(target)?;
        let (last, parents) = comps.split_last().ok_or("target is the root")?;
        let dir = match self.resolve(parents, false) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Err(format!("target {:?} does not exist", target.display())),
            Err(ResolveError::Invalid(r)) => return Err(r),
            Err(ResolveError::Io(p, e)) => return Err(format!("{}: {e}", p.display())),
        };
        let abs = self.root.join(dir).join(last);
        match std::fs::symlink_metadata(&abs) {
            Ok(md) if md.is_dir() => Err(format!("target {:?} is a directory", target.display())),
            Ok(_) => Ok(abs),
            Err(_) => Err(format!("target {:?} does not exist", target.display())),
        }
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        abs: &Path,
        what: &str,
    ) -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(abs)
            .ctx("create", abs)?;
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| ImageError::format(what, format!("reading {}: {e}", abs.display())))?;
            if n == 0 {
                return Ok(());
            }
            self.stats.file_bytes += n as u64;
            if self.stats.file_bytes > self.max_file_bytes {
                return Err(ImageError::format(
                    what,
                    format!(
                        "unpacked content is over the limit of {} bytes",
                        self.max_file_bytes
                    ),
                ));
            }
            file.write_all(&buf[..n]).ctx("write", abs)?;
        }
    }

    /// Creates a device node or fifo; `Ok(false)` when not permitted (not root).
    fn make_node<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        abs: &Path,
        meta: &Meta,
    ) -> Result<bool, String> {
        let (sflag, dev) = match kind {
            EntryType::Char | EntryType::Block => {
                let h = entry.header();
                let major = h.device_major().map_err(|e| e.to_string())?.unwrap_or(0);
                let minor = h.device_minor().map_err(|e| e.to_string())?.unwrap_or(0);
                let sflag = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (sflag, makedev(major.into(), minor.into()))
            }
            _ => (SFlag::S_IFIFO, 0),
        };
        let perm = Mode::from_bits_truncate((meta.mode & 0o777) as nix::libc::mode_t);
        match mknod(abs, sflag, perm, dev) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EPERM) => {
                self.stats.skipped_devices += 1;
                tracing::debug!(path = %abs.display(), "not permitted to create a device node; skipped");
                Ok(false)
            }
            Err(e) => Err(format!("mknod: {e}")),
        }
    }

    fn set_owner(&self, abs: &Path, meta: &Meta) -> Result<()> {
        let (Ok(uid), Ok(gid)) = (u32::try_from(meta.uid), u32::try_from(meta.gid)) else {
            return Err(ImageError::format(
                format!("{}", abs.display()),
                format!("uid/gid {}:{} out of range", meta.uid, meta.gid),
            ));
        };
        match std::os::unix::fs::lchown(abs, Some(uid), Some(gid)) {
            Err(e) if !self.is_root && e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
            r => r.ctx("chown", abs),
        }
    }

    /// Owner first: chown clears setuid/setgid bits that chmod then sets.
    fn set_owner_mode(&self, abs: &Path, meta: &Meta) -> Result<()> {
        self.set_owner(abs, meta)?;
        std::fs::set_permissions(abs, Permissions::from_mode(meta.mode & 0o7777)).ctx("chmod", abs)
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Meta> {
    let h = entry.header();
    let old = h.as_old();
    let mut meta = Meta {
        mode: or_zero_if_blank(h.mode(), &old.mode)?,
        uid: or_zero_if_blank(h.uid(), &old.uid)?,
        gid: or_zero_if_blank(h.gid(), &old.gid)?,
        mtime: or_zero_if_blank(h.mtime(), &old.mtime)?,
    };
    // PAX records override ustar fields too small for large ids.
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let parse = || ext.value().ok().and_then(|v| v.parse::<u64>().ok());
            match ext.key() {
                Ok("uid") => meta.uid = parse().unwrap_or(meta.uid),
                Ok("gid") => meta.gid = parse().unwrap_or(meta.gid),
                _ => {}
            }
        }
    }
    Ok(meta)
}

/// A numeric header field, 0 when the field is blank (NULs or spaces), as Go's
/// archive/tar (which wrote many layers) reads it.
fn or_zero_if_blank<T: Default>(parsed: std::io::Result<T>, raw: &[u8]) -> std::io::Result<T> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        other => other,
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<PathBuf, String> {
    match entry.link_name() {
        Ok(Some(l)) if !l.as_os_str().is_empty() => Ok(l.into_owned()),
        Ok(_) => Err("link without a target".into()),
        Err(e) => Err(format!("link target: {e}")),
    }
}

/// Removes whatever is at `abs` (without following a symlink there).
fn clear(abs: &Path) -> Result<()> {
    match std::fs::symlink_metadata(abs) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(abs).ctx("remove", abs),
        Ok(_) => std::fs::remove_file(abs).ctx("remove", abs),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("stat", abs, e)),
    }
}

/// Sets atime and mtime of `abs` itself (a symlink is not followed).
fn set_mtime(abs: &Path, secs: u64) -> Result<()> {
    let t = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        abs,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ImageError::io("set times of", abs, e.into()))
}

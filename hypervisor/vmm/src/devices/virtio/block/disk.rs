//! The host side of a drive: its image file, opened and locked once, then read and
//! written at offsets (pread/pwrite) and flushed with fdatasync.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg, OFlag};

use crate::config::{DriveSpec, DRIVE_ID_MAX};

/// The virtio-blk sector size: capacity and request offsets count in these.
pub const SECTOR_SIZE: u64 = 512;

/// Why a drive's image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("opening disk image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk image {path} is a directory")]
    Directory { path: PathBuf },
    #[error("disk image {path} is neither a regular file nor a block device")]
    NotADisk { path: PathBuf },
    #[error("disk image {path} is in use (locked by another process or drive)")]
    Locked { path: PathBuf },
    #[error("locking disk image {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("reading the size of disk image {path}")]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open, locked disk image. Dropping it closes the file, which releases the lock.
pub struct Disk {
    file: Flock<File>,
    path: PathBuf,
    /// Size in 512-byte sectors (the file's size rounded down).
    capacity: u64,
    read_only: bool,
    serial: [u8; DRIVE_ID_MAX],
}

impl Disk {
    /// Opens `spec.path` read-write (read-only if `spec.read_only`) and takes an
    /// exclusive (shared) `flock` on it without waiting.
    pub fn open(spec: &DriveSpec) -> Result<Disk, DiskError> {
        let path = spec.path.clone();
        let open_err = |source| DiskError::Open {
            path: path.clone(),
            source,
        };
        // O_NONBLOCK: opening a FIFO by mistake must not hang; cleared below.
        let file = OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EISDIR) => DiskError::Directory { path: path.clone() },
                _ => open_err(e),
            })?;
        let kind = file.metadata().map_err(open_err)?.file_type();
        if kind.is_dir() {
            return Err(DiskError::Directory { path });
        }
        if !kind.is_file() && !kind.is_block_device() {
            return Err(DiskError::NotADisk { path });
        }
        fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| open_err(io::Error::from(e)))?;
        let lock = if spec.read_only {
            FlockArg::LockSharedNonblock
        } else {
            FlockArg::LockExclusiveNonblock
        };
        let mut file = Flock::lock(file, lock).map_err(|(_, errno)| match errno {
            Errno::EWOULDBLOCK => DiskError::Locked { path: path.clone() },
            source => DiskError::Lock {
                path: path.clone(),
                source,
            },
        })?;
        // Seeking to the end sizes block devices too (their metadata says 0).
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| DiskError::Size {
                path: path.clone(),
                source,
            })?;
        let serial = match &spec.id {
            Some(id) => serial_bytes(id.as_bytes()),
            None => {
                let meta = file.metadata().map_err(open_err)?;
                serial_bytes(default_serial(meta.dev(), meta.ino()).as_bytes())
            }
        };
        Ok(Disk {
            file,
            path,
            capacity: size / SECTOR_SIZE,
            read_only: spec.read_only,
            serial,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The GET_ID answer: the serial, NUL-padded to 20 bytes.
    pub fn serial(&self) -> &[u8; DRIVE_ID_MAX] {
        &self.serial
    }

    /// Fills `buf` from byte `offset` (pread, retried until full).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `buf` at byte `offset` (pwrite, retried until done).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Makes written data durable (fdatasync).
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A serial stable for the file: "ccn" and a 64-bit FNV-1a hash of its device and
/// inode numbers in hex (19 characters).
fn default_serial(dev: u64, ino: u64) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0100_0000_01b3;
    let bytes = dev.to_le_bytes().into_iter().chain(ino.to_le_bytes());
    let hash = bytes.fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    format!("ccn{hash:016x}")
}

fn serial_bytes(id: &[u8]) -> [u8; DRIVE_ID_MAX] {
    let mut out = [0u8; DRIVE_ID_MAX];
    let n = id.len().min(DRIVE_ID_MAX);
    out[..n].copy_from_slice(&id[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path, read_only: bool) -> DriveSpec {
        DriveSpec {
            path: path.to_owned(),
            read_only,
            id: None,
        }
    }

    #[test]
    fn capacity_rounds_down_and_io_goes_to_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        std::fs::write(&path, vec![0u8; 3 * 512 + 100]).unwrap();
        let disk = Disk::open(&spec(&path, false)).unwrap();
        assert_eq!(disk.capacity(), 3);
        assert!(!disk.read_only());
        disk.write_at(b"hello", 512).unwrap();
        disk.flush().unwrap();
        let mut buf = [0u8; 5];
        disk.read_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(&std::fs::read(&path).unwrap()[512..517], b"hello");
        // Reading past the end of the file is an error, not a short read.
        let mut past = [0u8; 512];
        assert!(disk.read_at(&mut past, 3 * 512).is_err());
    }

    #[test]
    fn writers_exclude_each_other_and_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        std::fs::write(&path, [0u8; 512]).unwrap();
        let rw = Disk::open(&spec(&path, false)).unwrap();
        let err = Disk::open(&spec(&path, false)).err().unwrap();
        assert!(matches!(err, DiskError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(matches!(
            Disk::open(&spec(&path, true)).err().unwrap(),
            DiskError::Locked { .. }
        ));
        // Closing the writer releases its lock: readers share one.
        drop(rw);
        let ro1 = Disk::open(&spec(&path, true)).unwrap();
        let _ro2 = Disk::open(&spec(&path, true)).unwrap();
        assert!(ro1.read_only());
        assert!(ro1.write_at(b"x", 0).is_err(), "opened O_RDONLY");
        assert!(matches!(
            Disk::open(&spec(&path, false)).err().unwrap(),
            DiskError::Locked { .. }
        ));
    }

    #[test]
    fn missing_files_directories_and_fifos_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.img");
        let err = Disk::open(&spec(&missing, false)).err().unwrap();
        assert!(matches!(err, DiskError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.img"), "{err}");
        for ro in [false, true] {
            let err = Disk::open(&spec(dir.path(), ro)).err().unwrap();
            assert!(matches!(err, DiskError::Directory { .. }), "{err:?}");
            assert!(err.to_string().contains(&dir.path().display().to_string()));
        }
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = Disk::open(&spec(&fifo, true)).err().unwrap();
        assert!(matches!(err, DiskError::NotADisk { .. }), "{err:?}");
    }

    #[test]
    fn serials_are_the_id_or_derived_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        std::fs::write(&a, [0u8; 512]).unwrap();
        std::fs::write(&b, [0u8; 512]).unwrap();
        let named = Disk::open(&DriveSpec {
            id: Some("disk-7".into()),
            ..spec(&a, true)
        })
        .unwrap();
        assert_eq!(&named.serial()[..7], b"disk-7\0");
        let sa = *Disk::open(&spec(&a, true)).unwrap().serial();
        let sb = *Disk::open(&spec(&b, true)).unwrap().serial();
        assert_eq!(&sa[..3], b"ccn");
        assert_ne!(sa, sb);
        assert_eq!(sa, *Disk::open(&spec(&a, true)).unwrap().serial(), "stable");
        assert_eq!(default_serial(1, 2).len(), 19);
    }
}

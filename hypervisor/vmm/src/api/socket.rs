//! The API's unix socket: bound only where no live server listens, owner-only, and
//! removed when dropped (if it is still ours).

use std::io;
#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the API socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{} is in use by a live server", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A bound, listening API socket. Dropping it removes the socket file, unless
/// something else has replaced it meanwhile.
#[derive(Debug)]
pub struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we bound.
    id: (u64, u64),
}

impl ApiSocket {
    /// Binds `path` with mode 0600. A socket file nobody listens on (left by a
    /// process that was killed) is replaced; a live one, or a file that is not a
    /// socket, is refused.
    ///
    /// The process umask is narrowed around `bind` so the socket is never reachable
    /// by others, even briefly: call this before other threads create files.
    pub fn bind(path: &Path) -> Result<ApiSocket, SocketError> {
        let io_err = |what, source| SocketError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale API socket");
                    std::fs::remove_file(path).map_err(|e| io_err("removing stale", e))?;
                }
                Err(e) => return Err(io_err("probing", e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting", e)),
        }
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = listener.map_err(|e| io_err("binding", e))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("inspecting", e))?;
        let socket = ApiSocket {
            listener,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        };
        // No chmod by path afterwards (it would follow a symlink swapped in there):
        // the umask made the socket 0600 at bind.
        Ok(socket)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "removing the API socket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_owner_only_and_removes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let s = ApiSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A live socket is refused and left alone.
        let e = ApiSocket::bind(&path).unwrap_err();
        assert!(matches!(e, SocketError::InUse(_)), "{e}");
        assert!(path.exists());
        drop(s);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_regular_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // Bound, then its listener closed without removing the file: stale.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let s = ApiSocket::bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(s);
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        let e = ApiSocket::bind(&file).unwrap_err();
        assert!(matches!(e, SocketError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let s = ApiSocket::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }
}

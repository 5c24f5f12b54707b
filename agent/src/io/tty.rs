//! A container process's terminal: the pty master libcontainer sends to the console
//! socket, shared by the output pump, stdin and resizes.

use super::output::Source;
use crate::sys;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// The master side of a pty, non-blocking.
#[derive(Debug)]
pub struct Tty {
    master: AsyncFd<OwnedFd>,
}

impl Tty {
    pub fn new(master: OwnedFd) -> std::io::Result<Arc<Self>> {
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
        let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
        flags.insert(nix::fcntl::OFlag::O_NONBLOCK);
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Arc::new(Self {
            master: sys::async_fd(master)?,
        }))
    }

    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        sys::pty::set_winsize(self.master.get_ref().as_fd(), rows, cols)
    }

    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), buf)?)) {
                Ok(Ok(n)) => return Ok(n),
                // The slave side closed: every process holding it exited.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// The pump's view of a terminal.
pub struct TtySource(pub Arc<Tty>);

impl Source for TtySource {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).await
    }
}

/// A console socket libcontainer connects to once, to send the pty master.
pub struct ConsoleSocket {
    pub path: PathBuf,
    task: JoinHandle<std::io::Result<OwnedFd>>,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await?;
            stream
                .async_io(Interest::READABLE, || {
                    sys::fdpass::recv_fd(stream.as_raw_fd())
                })
                .await
        });
        Ok(Self {
            path: path.to_path_buf(),
            task,
        })
    }

    /// The master, once libcontainer has sent it (it does before the helper answers).
    pub async fn receive(mut self) -> std::io::Result<OwnedFd> {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task).await;
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no terminal received on the console socket",
            )),
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

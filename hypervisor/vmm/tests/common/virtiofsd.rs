//! A real virtiofsd for tests, serving a fresh temporary directory. The virtio-fs unit
//! tests (`src/devices/virtio/fs/tests.rs`) include this file too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Where virtiofsd is: PATH, then `cargo install`'s directory.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home)
        .map(|dir| dir.join("virtiofsd"))
        .find(|p| p.is_file())
}

/// A running virtiofsd; killed, and its directory removed, when dropped.
pub struct Virtiofsd {
    pub child: Option<Child>,
    /// Its vhost-user socket.
    pub socket: PathBuf,
    /// The directory it serves.
    pub shared: PathBuf,
    // Dropped after the process is gone.
    _dir: tempfile::TempDir,
}

impl Virtiofsd {
    /// Starts virtiofsd, or prints why `test` is skipped and returns `None`.
    pub fn start(test: &str) -> Option<Virtiofsd> {
        let Some(binary) = find() else {
            eprintln!(
                "SKIP {test}: virtiofsd is not on PATH or in ~/.cargo/bin (scripts/setup.sh installs it)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let socket = dir.path().join("fs.sock");
        let child = Command::new(binary)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&shared)
            // No namespaces or chroot: the tests need not run as root.
            .args([
                "--sandbox",
                "none",
                "--cache",
                "auto",
                "--thread-pool-size",
                "1",
            ])
            .args(["--log-level", "error", "--no-announce-submounts"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("virtiofsd starts");
        Some(Virtiofsd {
            child: Some(child),
            socket,
            shared,
            _dir: dir,
        })
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        self.kill();
    }
}

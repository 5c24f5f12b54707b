//! OOM kills as they happen: an inotify watch on the container's `memory.events`, which
//! the kernel touches on every change. The watch ends with the returned handle.

use super::stats::oom_kills;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

/// Calls `on_kill(count)` whenever the `oom_kill` count of the cgroup at `dir` grows
/// past `baseline`. Returns `None` where the file does not exist (no memory
/// controller); abort the handle to stop watching.
pub fn watch<F>(dir: &Path, baseline: u64, on_kill: F) -> Option<JoinHandle<()>>
where
    F: Fn(u64) + Send + 'static,
{
    let file = dir.join("memory.events");
    if !file.exists() {
        return None;
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(&file, AddWatchFlags::IN_MODIFY).ok()?;
    let fd = crate::sys::async_fd(OwnedFd::from(inotify)).ok()?;
    let dir: PathBuf = dir.to_path_buf();
    Some(tokio::spawn(async move {
        let mut seen = baseline;
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            // The events themselves say only "modified": drain them, then read the file.
            let mut buf = [0u8; 1024];
            match nix::unistd::read(guard.get_inner(), &mut buf) {
                Ok(_) => {}
                Err(nix::Error::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(_) => return,
            }
            let now = oom_kills(&dir);
            if now > seen {
                seen = now;
                on_kill(now);
            }
        }
    }))
}

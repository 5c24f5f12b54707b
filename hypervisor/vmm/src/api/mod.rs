//! The control API: HTTP/1.1 with JSON bodies on a unix socket (`--api-sock <path>`).
//!
//! One thread serves it, blocking, one request per connection (every response says
//! `Connection: close`). Requests are bounded: a head of at most 8 KiB and 32 headers
//! (431 beyond), a body of at most 64 KiB (413), `Content-Length` only (501 for a
//! transfer encoding), and each connection gets 5 s to send its request. Errors are
//! `{"error": "…"}`.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /vm/config` | body: the whole [`VmConfig`](crate::VmConfig) as JSON (fields but `boot` default as [`VmConfig::new`](crate::VmConfig::new) sets them; unknown fields refused); validated → 204; 400 naming the field; 409 once a VM started |
//! | `GET /vm/config` | 200 with the configuration; 404 before one is set |
//! | `PUT /vm/start` | builds and starts the configured VM → 204; 400 (the configuration names something unusable: a kernel that does not load, a vsock socket that exists…) or 500 (KVM, memory) with the error chain; 409 without a configuration or after a start |
//! | `PUT /vm/pause` | every vCPU out of `KVM_RUN` and parked → 204; 409 if not running; 500 if a vCPU did not park within 2 s (the VM runs on). Device threads keep running. |
//! | `PUT /vm/resume` | the vCPUs run again → 204; 409 if not paused |
//! | `PUT /vm/stop` | 204, then the VM ends and the process exits (status 0), leaving no socket behind; before a start, the process exits at once |
//! | `GET /vm` | `{"state": "not_started" \| "running" \| "paused" \| "ended", "exit": null \| "…", "uptime_ms", "vcpus", "memory_mib"}` |
//! | `GET /vm/devices` | `[{"type": "vsock", "mmio_base", "mmio_size", "gsi", "host": {"uds_path", "guest_cid"}}, …]` in slot order; 409 before a start |
//! | `GET /metrics` | [`MetricsSource::snapshot`](crate::MetricsSource::snapshot); 409 before a start |
//!
//! Other paths are 404, other methods on these paths 405 (with `Allow`).
//!
//! The socket ([`ApiSocket`]) is mode 0600; binding refuses a path where a live
//! server listens and replaces a stale socket file; it is removed when the server
//! stops. The VM itself lives in a [`VmSlot`], shared with the thread that builds
//! and tears it down (the binary's main thread).

mod http;
mod routes;
mod slot;
mod socket;

pub use http::{parse_head, read_request, HttpError, Request, Response, MAX_BODY, MAX_HEAD};
pub use routes::{handle, parse_config, After};
pub use slot::{error_chain, OwnerRequest, SlotError, StartFailure, VmSlot};
pub use socket::{ApiSocket, SocketError};

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::stoppable::StoppableThread;

/// How long a client has to send its request and take the response.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The running API thread. [`ApiServer::stop`] (or dropping it) ends the thread and
/// removes the socket.
pub struct ApiServer(StoppableThread);

impl ApiServer {
    /// Serves `socket` on a thread of its own (`api`) against `slot`.
    pub fn spawn(socket: ApiSocket, slot: Arc<VmSlot>) -> io::Result<ApiServer> {
        socket.listener().set_nonblocking(true)?;
        let (stop, theirs) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                crate::seccomp::apply(crate::seccomp::ThreadKind::Api);
                serve(&socket, &slot, &theirs)
            })?;
        // Closing `stop` wakes the thread to end: it sees its end of the pair become
        // readable (EOF).
        let signal = move || drop(stop);
        Ok(ApiServer(StoppableThread::new(
            thread,
            "the API thread panicked",
            signal,
        )))
    }

    /// Ends the thread (after the request it is serving, if any) and removes the
    /// socket.
    pub fn stop(self) {
        self.0.stop();
    }
}

/// The API thread: waits for a connection or the stop event, serves one request per
/// connection. Dropping `socket` on return removes it.
fn serve(socket: &ApiSocket, slot: &VmSlot, stop: &UnixStream) {
    tracing::info!(path = %socket.path().display(), "API listening");
    loop {
        let mut fds = [
            PollFd::new(socket.listener().as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "API poll failed; the API stops");
                return;
            }
        }
        if fds[1].any().unwrap_or(false) {
            return;
        }
        match socket.listener().accept() {
            Ok((stream, _)) => {
                if serve_connection(stream, slot) == After::Stop {
                    slot.stop();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(error = %e, "accepting an API connection");
                // Out of fds, say: do not spin on it.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Reads one request, answers it, closes the connection.
fn serve_connection(stream: UnixStream, slot: &VmSlot) -> After {
    let mut conn = Deadline {
        stream: &stream,
        until: Instant::now() + CONNECTION_TIMEOUT,
    };
    let (response, after, what) = match read_request(&mut conn) {
        Ok(req) => {
            let (response, after) = handle(slot, &req);
            (response, after, format!("{} {}", req.method, req.path))
        }
        Err(e) => match e.status() {
            Some(status) => (Response::error(status, &e), After::Nothing, e.to_string()),
            None => {
                tracing::debug!(error = %e, "API connection dropped");
                return After::Nothing;
            }
        },
    };
    tracing::debug!(request = %what, status = response.status, "API request");
    if let Err(e) = response.write_to(&mut conn) {
        tracing::debug!(error = %e, "writing an API response");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    after
}

/// A connection whose reads and writes share one deadline.
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        self.until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "API client too slow"))
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        (&mut &*self.stream).read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&mut &*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! The agent as a host process, shared by the integration tests.
#![allow(dead_code)]

pub mod pod;

use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let state_dir = dir.path().join("state");
        let child = Command::new(env!("CARGO_BIN_EXE_cocoon-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--state-dir")
            .arg(&state_dir)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "agent did not bind its socket");
            std::thread::sleep(Duration::from_millis(5));
        }
        Self {
            child,
            socket,
            state_dir,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `path` as the agent sees it (it has a mount namespace of its own).
    pub fn view(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(path.strip_prefix("/").unwrap())
    }

    /// A channel to the agent. The socket file appears at bind(2), a moment before
    /// listen(2): a refused first connection is retried.
    pub async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.socket.clone();
            let connected = Endpoint::from_static("http://agent")
                .connect_with_connector(service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await;
            match connected {
                Ok(channel) => return channel,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("connect to the agent: {e}"),
            }
        }
    }

    /// SIGTERM (the agent removes every pod, as on Shutdown), then waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

//! Containers of a pod: libcontainer (through the helper) does namespaces, pivot_root,
//! capabilities, seccomp and the container cgroup; the agent adds the overlay rootfs,
//! stdio, exit tracking and OOM reporting.

mod create;
pub mod exec;
pub mod mounts;
pub mod process;
mod remove;
pub mod rootfs;
pub mod spec;
mod start;
pub mod stdio;

use crate::sandbox::Sandbox;
use process::Process;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

pub use create::create;
pub use exec::exec;
pub use remove::remove;
pub use start::start;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created; its process waits for StartContainer.
    Created,
    Running,
    /// Its process exited.
    Stopped,
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub sandbox: Arc<Sandbox>,
    /// `<pod dir>/containers/<id>`: bundle, overlay layers.
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    /// The container cgroup, relative to the hierarchy's root.
    pub cgroup: PathBuf,
    /// Defaults for execs: the spec's process.
    pub template: oci_spec::runtime::Process,
    pub init: Arc<Process>,
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    started: AtomicBool,
    /// Serialises start, exec and remove.
    pub lifecycle: tokio::sync::Mutex<()>,
    oom_watch: Mutex<Option<JoinHandle<()>>>,
}

impl Container {
    pub fn status(&self) -> Status {
        if self.init.exited().is_some() {
            Status::Stopped
        } else if self.started.load(Ordering::Acquire) {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// The process `exec_id` names; empty → the container's own.
    pub fn process(&self, exec_id: &str) -> crate::error::Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| crate::error::AgentError::not_found("exec", exec_id))
    }

    /// Drops an exited exec from the table.
    pub fn forget_exec(&self, exec_id: &str) {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id);
    }

    fn stop_oom_watch(&self) {
        if let Some(h) = self
            .oom_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

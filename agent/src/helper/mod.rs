//! The helper: the agent binary re-executed (`/proc/self/exe __helper`) to drive
//! youki's libcontainer, one operation per process.
//!
//! libcontainer forks and clones (intermediate and init processes) and calls `waitpid`
//! on its own children; doing that inside the multi-threaded agent would be unsafe
//! after fork and would race the agent's reaper. The helper is single-threaded, does
//! one operation, writes one JSON line with the result to its stdout and exits. The
//! processes it creates outlive it and are reparented to the agent (PID 1, or a child
//! subreaper as a host process), whose reaper collects them.
//!
//! Descriptors: 0 = the request (JSON), 1 = the reply line, 2 = the agent's stderr
//! (logs); for a process without a terminal, 3/4/5 = its stdin/stdout/stderr.
//!
//! The agent normally starts one helper *server* (`serve.rs`) and has it fork a child
//! per operation, which then runs exactly as a one-shot helper (same descriptors): no
//! fork of the multi-threaded agent and no exec per operation. Should the server be
//! unusable, the agent falls back to a one-shot helper.

mod create;
mod exec;
mod pause;
pub mod run;
mod serve;
mod view;

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// argv[1] that selects the helper.
pub const HELPER_ARG: &str = "__helper";

/// argv[2] that makes the helper a server forking one child per request
/// (see `serve.rs`).
pub const SERVE_ARG: &str = "serve";

/// Descriptors of the container process's stdio in the helper.
pub const STDIO_FDS: [i32; 3] = [3, 4, 5];

/// What the agent asks a helper to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// libcontainer's state root (one directory per container).
    pub state_root: PathBuf,
    /// A cgroup v2 directory to show at /sys/fs/cgroup in the helper's own mount
    /// namespace: set when the host's /sys/fs/cgroup is not a cgroup v2 mount.
    pub cgroup_view: Option<PathBuf>,
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Creates the container from `bundle/config.json`; its process waits for Start.
    Create {
        id: String,
        bundle: PathBuf,
        console_socket: Option<PathBuf>,
    },
    /// Lets the created container's process exec the user's program.
    Start { id: String },
    /// Runs the OCI process in `process` (a process.json) in the running container.
    Exec {
        id: String,
        process: PathBuf,
        console_socket: Option<PathBuf>,
    },
    /// Removes libcontainer's state and the container's cgroup (killing what is left).
    Delete { id: String },
    /// Starts the pod's pause process in new namespaces.
    Pause(PauseSpec),
}

impl Op {
    /// The operation's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Start { .. } => "start",
            Op::Exec { .. } => "exec",
            Op::Delete { .. } => "delete",
            Op::Pause(_) => "pause",
        }
    }
}

/// The pause process: holder of a pod's shared namespaces.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseSpec {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
    pub hostname: Option<String>,
    /// Namespaced sysctls, `net.ipv4.ip_forward` style, validated by the agent.
    pub sysctls: Vec<(String, String)>,
}

/// The helper's one line of answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub pid: Option<i32>,
    pub error: Option<String>,
}

/// Entry point of the re-executed agent. Must run before any thread is started.
pub fn main() -> ExitCode {
    crate::sys::default_sigpipe();
    if std::env::args().nth(2).as_deref() == Some(SERVE_ARG) {
        return serve::serve();
    }
    let reply = respond(read_request());
    let ok = reply.error.is_none();
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line).and_then(|()| out.flush());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Carries out a request (or reports why it could not be read).
fn respond(request: Result<Request, String>) -> Reply {
    match request {
        Ok(req) => match execute(&req) {
            Ok(pid) => Reply { pid, error: None },
            Err(e) => Reply {
                pid: None,
                error: Some(e),
            },
        },
        Err(e) => Reply {
            pid: None,
            error: Some(format!("bad request: {e}")),
        },
    }
}

fn read_request() -> Result<Request, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| e.to_string())
}

fn execute(req: &Request) -> Result<Option<i32>, String> {
    if let Some(view) = &req.cgroup_view {
        view::enter(view).map_err(|e| format!("cgroup view {}: {e}", view.display()))?;
    }
    let root = &req.state_root;
    match &req.op {
        Op::Create {
            id,
            bundle,
            console_socket,
        } => create::create(root, id, bundle, console_socket.as_deref()).map(Some),
        Op::Start { id } => create::start(root, id).map(|()| None),
        Op::Exec {
            id,
            process,
            console_socket,
        } => exec::exec(root, id, process, console_socket.as_deref()).map(Some),
        Op::Delete { id } => create::delete(root, id).map(|()| None),
        Op::Pause(spec) => pause::pause(spec).map(Some),
    }
}

/// Formats an error with its sources, for the reply line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let req = Request {
            state_root: "/run/x".into(),
            cgroup_view: None,
            op: Op::Start { id: "c".into() },
        };
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains(r#""op":"start""#), "{json}");
        let back: Request = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.op, Op::Start { id } if id == "c"));
        let bad = r#"{"state_root":"/","cgroup_view":null,"op":{"op":"start","id":"c","x":1}}"#;
        assert!(serde_json::from_str::<Request>(bad).is_err());
    }
}

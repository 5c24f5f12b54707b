//! The pause process: it holds a pod's shared namespaces while containers come and go.
//!
//! The helper unshares the namespaces, configures them (hostname, loopback, sysctls),
//! then forks: the child is the pause process — PID 1 of the pod's PID namespace when
//! that is shared — and the helper reports its pid and exits. The pause process ignores
//! SIGCHLD so the kernel reaps the orphans it inherits, and sleeps until killed.

use super::PauseSpec;
use crate::sys;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::sethostname;

pub fn pause(spec: &PauseSpec) -> Result<i32, String> {
    let mut flags = CloneFlags::empty();
    for (on, flag) in [
        (spec.network, CloneFlags::CLONE_NEWNET),
        (spec.ipc, CloneFlags::CLONE_NEWIPC),
        (spec.uts, CloneFlags::CLONE_NEWUTS),
        (spec.pid, CloneFlags::CLONE_NEWPID),
    ] {
        if on {
            flags |= flag;
        }
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if spec.uts {
        if let Some(name) = &spec.hostname {
            sethostname(name).map_err(|e| format!("sethostname: {e}"))?;
        }
    }
    if spec.network {
        sys::net::loopback_up().map_err(|e| format!("loopback up: {e}"))?;
    }
    for (key, value) in &spec.sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}: {e}"))?;
    }
    match sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        Some(child) => Ok(child.as_raw()),
        None => pause_forever(),
    }
}

fn pause_forever() -> ! {
    // Let go of the request and reply pipes so the agent sees the reply end.
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    sys::autoreap_children();
    let _ = nix::unistd::setsid();
    loop {
        nix::unistd::pause();
    }
}

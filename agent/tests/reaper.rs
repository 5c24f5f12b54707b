//! The one reaper with real children: statuses reach registered waiters, late waiters
//! get kept statuses, and a status older than the process asked about is not handed out.
//!
//! One test only: a reaper collects every child of the process, so two tests running
//! side by side in this binary would take each other's statuses.

use cocoon_agent::init::reaper::{ExitStatus, Reaper};
use cocoon_agent::sys::spawn::{fork_exec, SpawnSpec};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn sh(script: &str) -> SpawnSpec {
    SpawnSpec {
        program: CString::new("/bin/sh").unwrap(),
        args: ["sh", "-c", script]
            .map(|s| CString::new(s).unwrap())
            .to_vec(),
        fds: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_their_waiters_and_fds_their_children() {
    let reaper = Reaper::new();
    reaper.start().unwrap();

    // Registered before it could exit.
    let (_, exited) = reaper.spawn(|| fork_exec(&sh("exit 3"))).unwrap();
    assert_eq!(exited.await.unwrap(), ExitStatus::Exited(3));
    let (_, exited) = reaper.spawn(|| fork_exec(&sh("kill -TERM $$"))).unwrap();
    assert_eq!(exited.await.unwrap(), ExitStatus::Signaled(15));

    // Exec failure shows as 127.
    let missing = SpawnSpec {
        program: CString::new("/no/such/program").unwrap(),
        args: vec![CString::new("x").unwrap()],
        fds: vec![],
    };
    let (_, exited) = reaper.spawn(|| fork_exec(&missing)).unwrap();
    assert_eq!(exited.await.unwrap(), ExitStatus::Exited(127));

    // Exited before anyone asked: the kept status is handed out to a waiter for a
    // process started after `before`...
    let before = Instant::now();
    let pid = fork_exec(&sh("exit 5")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = reaper.watch(pid, before);
    assert_eq!(late.await.unwrap(), ExitStatus::Exited(5));

    // ...but not to one asking about a process started after the status was reaped
    // (that would be a different process that reused the pid).
    let pid = fork_exec(&sh("exit 6")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale = reaper.watch(pid, Instant::now());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stale)
            .await
            .is_err(),
        "a status reaped before the process started was handed out"
    );

    // Descriptors are passed to the child.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut spec = sh("echo through-fd-7 >&7");
    spec.fds = vec![(w.as_raw_fd(), 7)];
    let (_, exited) = reaper.spawn(|| fork_exec(&spec)).unwrap();
    drop(w);
    assert_eq!(exited.await.unwrap(), ExitStatus::Exited(0));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
    assert_eq!(out, "through-fd-7\n");
}

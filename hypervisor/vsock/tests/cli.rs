//! The `cocoon-vsock` binary's contract: refuses taken or unusable paths, creates its
//! sockets, serves one frontend, and cleans up on frontend disconnect and on SIGTERM.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn backend(dir: &Path, cid: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cocoon-vsock"));
    c.arg("--socket")
        .arg(dir.join("vu.sock"))
        .arg("--uds")
        .arg(dir.join("v.sock"))
        .arg("--guest-cid")
        .arg(cid)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "backend exited early");
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn refuses_existing_socket_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vu.sock"), b"").unwrap();
    let out = backend(dir.path(), "3").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(out.stdout.is_empty());
    assert!(!dir.path().join("v.sock").exists(), "nothing created");
}

#[test]
fn refuses_reserved_cid() {
    let dir = tempfile::tempdir().unwrap();
    let out = backend(dir.path(), "2").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("guest_cid"));
}

#[test]
fn exits_zero_and_cleans_up_when_the_frontend_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = backend(dir.path(), "3").spawn().unwrap();
    wait_for(&dir.path().join("vu.sock"), &mut child);
    assert!(
        dir.path().join("v.sock").exists(),
        "the hybrid socket comes first"
    );
    drop(UnixStream::connect(dir.path().join("vu.sock")).unwrap());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "sockets removed"
    );
}

#[test]
fn sigterm_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = backend(dir.path(), "3").spawn().unwrap();
    wait_for(&dir.path().join("vu.sock"), &mut child);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "sockets removed"
    );
}

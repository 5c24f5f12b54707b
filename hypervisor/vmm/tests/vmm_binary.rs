//! The `cocoon-vmm` binary itself, with its default `--seccomp trap`: every thread
//! (main, signal, metrics, vCPUs, devices) under its filter. The guest is a tiny
//! driver wrapped as a PVH "kernel" ([`common::pvh`]) that uses a virtio-rng and a
//! virtio-vsock device while a host client connects over the hybrid socket; a
//! second guest just spins until SIGTERM stops the VMM. Any call a filter lacks would
//! end the binary with status 159 and name the call on stderr.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::asm::Asm;
use common::guest::{self, OK};
use common::kvm_or_skip;
use common::mmio::MMIO;
use common::pvh;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CODE_ADDR: u32 = common::CODE_ADDR as u32;
const WAIT: Duration = Duration::from_secs(30);

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cocoon-vmm"))
}

/// Common arguments: the guest `code` as a PVH image in `dir`, 2 vCPUs (the second
/// waits for a SIPI that never comes, in KVM_RUN until the VMM kicks it), 32 MiB,
/// debug-exit port, serial log, a timeout.
fn guest_args(cmd: &mut Command, dir: &Path, code: &[u8]) {
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, pvh::elf(code, CODE_ADDR)).unwrap();
    cmd.arg("--kernel")
        .arg(kernel)
        .args(["--vcpus", "2", "--memory-mib", "32", "--debug-exit"])
        .arg("--serial-log")
        .arg(dir.join("serial.log"))
        .args(["--timeout-s", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
}

/// Polls `ready` for up to [`WAIT`] while `child` runs.
fn wait_for<T>(child: &mut Child, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let mut pipe = child.stderr.take().unwrap();
            pipe.read_to_string(&mut err).unwrap();
            panic!("cocoon-vmm ended ({status}) before {what}; stderr:\n{err}");
        }
        assert!(Instant::now() < deadline, "no {what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the binary to end; its exit code and stderr.
fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err)
}

#[test]
fn a_guest_using_rng_and_vsock_runs_to_a_clean_exit_under_the_filters() {
    if !kvm_or_skip("vmm binary under seccomp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let metrics = dir.path().join("metrics.json");
    // Slot 0 is the entropy device, slot 1 vsock.
    let code = guest::rng_and_vsock(MMIO, MMIO + 0x1000);
    let mut cmd = vmm();
    guest_args(&mut cmd, dir.path(), &code);
    cmd.arg("--entropy")
        .arg("--vsock-uds")
        .arg(&uds)
        .arg("--metrics")
        .arg(&metrics)
        .args(["--metrics-interval-ms", "10"]);
    let mut child = cmd.spawn().unwrap();

    // Until it listens, a connection is refused.
    let mut client = wait_for(&mut child, "the hybrid vsock socket", || {
        UnixStream::connect(&uds).ok()
    });
    client.set_read_timeout(Some(WAIT)).unwrap();
    guest::connect_and_expect_hi(&mut client);

    let (code, err) = finish(child);
    if let Some(why) = code.and_then(|c| guest::failure(c as u8)) {
        panic!("guest driver failed: {why}; stderr:\n{err}");
    }
    assert_eq!(code, Some(i32::from(OK)), "stderr:\n{err}");
    assert!(!err.contains("seccomp"), "{err}");
    let serial = std::fs::read_to_string(dir.path().join("serial.log")).unwrap();
    assert_eq!(serial, "ok\n");
    assert!(
        !uds.exists(),
        "the hybrid socket is removed when the VM ends"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(m["end"]["exit"], "debug exit with code 0x10", "{m}");
    assert_eq!(m["devices"][0]["bytes"], 64, "{m}");
    assert_eq!(m["devices"][1]["tx_bytes"], 3, "{m}");
}

#[test]
fn sigterm_stops_a_spinning_guest_under_the_filters() {
    if !kvm_or_skip("vmm binary SIGTERM under seccomp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let code = Asm::new().outb_str(0x3f8, b"up\n").spin().finish();
    let mut cmd = vmm();
    guest_args(&mut cmd, dir.path(), &code);
    cmd.args(["--seccomp", "trap"]);
    let mut child = cmd.spawn().unwrap();
    wait_for(&mut child, "the guest's output", || {
        let text = std::fs::read_to_string(&serial).unwrap_or_default();
        (text == "up\n").then_some(())
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(3), "stderr:\n{err}");
    assert!(!err.contains("seccomp"), "{err}");
}

#[test]
fn an_unknown_seccomp_mode_is_refused() {
    let out = vmm()
        .args(["--kernel", "/nonexistent", "--seccomp", "kill"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown seccomp mode \"kill\" (trap, log or off)"),
        "{err}"
    );
}

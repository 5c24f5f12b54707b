//! The control API through the real `cocoon-vmm` binary: a tiny guest configured and
//! started over the socket, paused (its serial output stops) and resumed (it goes on),
//! its devices and metrics read, then stopped; bad requests answered with the right
//! status; the socket refused to a second VMM and removed on every way out.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cocoon_vmm::{VmConfig, VsockSpec};
use common::asm::Asm;
use common::{kvm_or_skip, raw_config};
use serde_json::Value;

const COM1: u16 = 0x3f8;
/// Upper bound on waits for something that should happen (a failure after it, not a
/// timing assertion).
const PATIENCE: Duration = Duration::from_secs(20);

/// A `cocoon-vmm` process under test, killed if the test fails half-way.
struct Vmm {
    child: Child,
    sock: PathBuf,
    stderr: PathBuf,
}

impl Vmm {
    /// Starts `cocoon-vmm --api-sock <dir>/api.sock` plus `extra`, and waits for the socket.
    fn spawn(dir: &Path, extra: &[&str]) -> Vmm {
        let vmm = Vmm::spawn_raw(dir, "api.sock", extra);
        let deadline = Instant::now() + PATIENCE;
        while UnixStream::connect(&vmm.sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "no API socket; stderr: {}",
                vmm.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        vmm
    }

    fn spawn_raw(dir: &Path, sock: &str, extra: &[&str]) -> Vmm {
        let sock = dir.join(sock);
        let stderr = dir.join(format!("vmm-{}.log", next_id()));
        let child = Command::new(env!("CARGO_BIN_EXE_cocoon-vmm"))
            .arg("--api-sock")
            .arg(&sock)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Vmm {
            child,
            sock,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        call(&self.sock, method, path, body.as_bytes())
    }

    /// Waits for the process to exit.
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cocoon-vmm did not exit; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number for each process a test starts, for its log's name.
fn next_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One request on a fresh connection: the status and the JSON body (null if none).
fn call(sock: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = raw_call(sock, method, path, body);
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: body {:?}: {e}",
                String::from_utf8_lossy(&body)
            )
        })
    };
    (status, value)
}

/// The status line's code and the body of the response to a hand-written request.
fn raw_call(sock: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(sock).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    // The server may answer (413) and close before taking all of an oversized body.
    let _ = s.write_all(&req);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    parse_response(&resp)
}

fn parse_response(resp: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let head = String::from_utf8_lossy(&resp[..split]);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{text:?}");
    let body = resp[split + 4..].to_vec();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
    {
        assert_eq!(len.parse::<usize>().unwrap(), body.len(), "{text:?}");
    }
    (status, body)
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `path` is larger than `than` bytes.
fn wait_growth(path: &Path, than: u64, vmm: &Vmm) {
    let deadline = Instant::now() + PATIENCE;
    while size(path) <= than {
        assert!(
            Instant::now() < deadline,
            "the serial log did not grow past {than}; stderr: {}",
            vmm.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A guest that writes `x` to COM1 forever.
fn chatty_guest() -> Vec<u8> {
    Asm::new()
        .label("top")
        .outb_str(COM1, b"x")
        .jmp("top")
        .finish()
}

#[test]
fn configure_start_pause_resume_inspect_and_stop_over_the_socket() {
    if !kvm_or_skip("api lifecycle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let vsock = dir.path().join("v.sock");
    let mut vmm = Vmm::spawn(dir.path(), &[]);
    let mode = std::fs::metadata(&vmm.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let (status, state) = vmm.call("GET", "/vm", "");
    assert_eq!(status, 200);
    assert_eq!(state["state"], "not_started");

    let mut config: VmConfig = raw_config(chatty_guest(), serial.clone());
    config.entropy = true;
    config.vsock = Some(VsockSpec {
        guest_cid: 3,
        uds_path: vsock.clone(),
    });
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(vmm.call("PUT", "/vm/config", &json).0, 204);
    let (status, got) = vmm.call("GET", "/vm/config", "");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_value::<VmConfig>(got).unwrap(), config);

    assert_eq!(vmm.call("PUT", "/vm/start", "").0, 204);
    // The state now forbids a second start and a new configuration.
    let (status, body) = vmm.call("PUT", "/vm/start", "");
    assert_eq!(status, 409, "{body}");
    let (status, body) = vmm.call("PUT", "/vm/config", &json);
    assert_eq!(status, 409, "{body}");
    let (status, body) = vmm.call("PUT", "/vm/resume", "");
    assert_eq!(status, 409, "{body}");
    assert!(
        vsock.exists(),
        "the vsock device binds its socket while the VM is built"
    );

    let (_, state) = vmm.call("GET", "/vm", "");
    assert_eq!(state["state"], "running");
    assert_eq!(state["vcpus"], 1);
    assert_eq!(state["memory_mib"], 32);
    assert!(state["exit"].is_null());
    assert!(state["uptime_ms"].is_u64());
    wait_growth(&serial, 0, &vmm);

    // Paused: the serial log stops growing.
    assert_eq!(vmm.call("PUT", "/vm/pause", "").0, 204);
    let (_, state) = vmm.call("GET", "/vm", "");
    assert_eq!(state["state"], "paused");
    let paused_at = size(&serial);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(size(&serial), paused_at, "the guest ran while paused");
    let (status, body) = vmm.call("PUT", "/vm/pause", "");
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("already paused"), "{body}");
    // Metrics and devices are served while paused.
    let (status, metrics) = vmm.call("GET", "/metrics", "");
    assert_eq!(status, 200);
    let pio_paused = metrics["exits"]["pio"].as_u64().unwrap();
    assert!(pio_paused > 0, "{metrics}");
    std::thread::sleep(Duration::from_millis(100));
    let (_, metrics) = vmm.call("GET", "/metrics", "");
    assert_eq!(metrics["exits"]["pio"].as_u64().unwrap(), pio_paused);

    // Resumed: it grows again.
    assert_eq!(vmm.call("PUT", "/vm/resume", "").0, 204);
    let (_, state) = vmm.call("GET", "/vm", "");
    assert_eq!(state["state"], "running");
    wait_growth(&serial, paused_at, &vmm);
    // And once more, to see a second pause park the vCPU again.
    assert_eq!(vmm.call("PUT", "/vm/pause", "").0, 204);
    let paused_at = size(&serial);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(size(&serial), paused_at, "the guest ran while paused again");
    assert_eq!(vmm.call("PUT", "/vm/resume", "").0, 204);
    wait_growth(&serial, paused_at, &vmm);

    let (status, devices) = vmm.call("GET", "/vm/devices", "");
    assert_eq!(status, 200);
    let devices = devices.as_array().unwrap().clone();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert_eq!(devices[0]["type"], "rng");
    assert_eq!(devices[0]["mmio_base"], 0xd000_0000u64);
    assert_eq!(devices[0]["mmio_size"], 0x1000);
    assert_eq!(devices[0]["gsi"], 5);
    assert_eq!(devices[1]["type"], "vsock");
    assert_eq!(devices[1]["mmio_base"], 0xd000_1000u64);
    assert_eq!(devices[1]["gsi"], 6);
    assert_eq!(devices[1]["host"]["uds_path"], vsock.to_str().unwrap());
    assert_eq!(devices[1]["host"]["guest_cid"], 3);

    let (status, metrics) = vmm.call("GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics["exits"]["pio"].as_u64().unwrap() > pio_paused,
        "{metrics}"
    );
    assert_eq!(metrics["vcpus"].as_array().unwrap().len(), 1);
    assert!(metrics["boot"]["first_guest_exit_us"].is_u64(), "{metrics}");
    let types: Vec<&str> = metrics["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["rng", "vsock"]);

    // Stop from paused: answered, then the process exits 0 leaving no socket.
    assert_eq!(vmm.call("PUT", "/vm/pause", "").0, 204);
    assert_eq!(vmm.call("PUT", "/vm/stop", "").0, 204);
    let status = vmm.exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", vmm.stderr());
    assert!(!vmm.sock.exists(), "the API socket was left behind");
    assert!(!vsock.exists(), "the vsock socket was left behind");
}

#[test]
fn bad_requests_get_their_status_and_a_stop_before_start_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut vmm = Vmm::spawn(dir.path(), &[]);
    let raw = r#""boot": {"raw": {"code": [244], "load_addr": 1048576}}"#;
    for (body, status, needle) in [
        ("{not json".to_string(), 400, "key must be a string"),
        (
            format!(r#"{{"vcpu": 2, {raw}}}"#),
            400,
            "unknown field `vcpu`",
        ),
        (
            format!(r#"{{"vcpus": 300, {raw}}}"#),
            400,
            "vcpus: invalid value",
        ),
        (
            format!(r#"{{"vcpus": 0, {raw}}}"#),
            400,
            "vcpus: 0 is not in 1..=32",
        ),
        (
            format!(r#"{{"memory_mib": "lots", {raw}}}"#),
            400,
            "memory_mib: invalid type",
        ),
        (
            r#"{"boot": {"kernel": {}}}"#.to_string(),
            400,
            "missing field `path`",
        ),
    ] {
        let (got, v) = vmm.call("PUT", "/vm/config", &body);
        assert_eq!(got, status, "{body}: {v}");
        assert!(error_of(&v).contains(needle), "{body}: {v}");
    }
    let (status, v) = vmm.call("GET", "/vm/config", "");
    assert_eq!(status, 404, "a refused configuration is not kept: {v}");

    let (status, v) = vmm.call("GET", "/no/such/path", "");
    assert_eq!(status, 404, "{v}");
    let (status, v) = vmm.call("DELETE", "/vm", "");
    assert_eq!(status, 405, "{v}");
    let (status, v) = vmm.call("PUT", "/vm/start", "");
    assert_eq!(status, 409, "start without a configuration: {v}");
    let (status, v) = vmm.call("PUT", "/vm/pause", "");
    assert_eq!(status, 409, "pause before a start: {v}");

    let big = vec![b' '; 100 * 1024];
    let (status, body) = raw_call(&vmm.sock, "PUT", "/vm/config", &big);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // Garbage instead of a request line.
    let mut s = UnixStream::connect(&vmm.sock).unwrap();
    s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    assert_eq!(parse_response(&resp).0, 400);
    // A client that connects and goes away does not disturb the server.
    drop(UnixStream::connect(&vmm.sock).unwrap());
    assert_eq!(vmm.call("GET", "/vm", "").0, 200);

    assert_eq!(vmm.call("PUT", "/vm/stop", "").0, 204);
    assert_eq!(vmm.exit().code(), Some(0), "stderr: {}", vmm.stderr());
    assert!(!vmm.sock.exists(), "the API socket was left behind");
}

#[test]
fn a_second_vmm_is_refused_a_live_socket_and_sigterm_still_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Vmm::spawn(dir.path(), &[]);
    let mut second = Vmm::spawn_raw(dir.path(), "api.sock", &[]);
    assert_eq!(second.exit().code(), Some(1));
    assert!(second.stderr().contains("in use"), "{}", second.stderr());
    // The first one is untouched and still serves.
    assert_eq!(first.call("GET", "/vm", "").0, 200);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(first.exit().code(), Some(3), "stderr: {}", first.stderr());
    assert!(!first.sock.exists(), "the API socket was left behind");

    // A stale socket file (its server killed) is replaced.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap());
    let mut third = Vmm::spawn_raw(dir.path(), "stale.sock", &[]);
    let deadline = Instant::now() + PATIENCE;
    while call_ok(&third.sock).is_none() {
        assert!(Instant::now() < deadline, "{}", third.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(third.call("PUT", "/vm/stop", "").0, 204);
    assert_eq!(third.exit().code(), Some(0));
}

/// `GET /vm` if the socket answers.
fn call_ok(sock: &Path) -> Option<u16> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.write_all(b"GET /vm HTTP/1.1\r\n\r\n").ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    Some(parse_response(&resp).0)
}

#[test]
fn a_failed_start_is_reported_and_a_good_one_can_follow() {
    if !kvm_or_skip("api failed start") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut vmm = Vmm::spawn(dir.path(), &[]);
    let missing = r#"{"boot": {"kernel": {"path": "/nonexistent/vmlinux"}}}"#;
    assert_eq!(vmm.call("PUT", "/vm/config", missing).0, 204);
    let (status, v) = vmm.call("PUT", "/vm/start", "");
    assert_eq!(status, 400, "{v}");
    assert!(
        error_of(&v).contains("opening kernel /nonexistent/vmlinux: No such file"),
        "{v}"
    );
    let (_, state) = vmm.call("GET", "/vm", "");
    assert_eq!(state["state"], "not_started");

    // The guest exits through the debug port: the process exits with its code.
    let code = Asm::new().outb_str(COM1, b"ok\n").exit(0x2a).finish();
    let serial = dir.path().join("serial.log");
    let config = serde_json::to_string(&raw_config(code, serial.clone())).unwrap();
    assert_eq!(vmm.call("PUT", "/vm/config", &config).0, 204);
    let (status, v) = vmm.call("PUT", "/vm/start", "");
    assert_eq!(status, 204, "{v}");
    assert_eq!(vmm.exit().code(), Some(0x2a), "stderr: {}", vmm.stderr());
    assert_eq!(std::fs::read_to_string(&serial).unwrap(), "ok\n");
    assert!(!vmm.sock.exists(), "the API socket was left behind");
}

#[test]
fn a_command_line_vm_that_fails_to_build_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut vmm = Vmm::spawn_raw(
        dir.path(),
        "api.sock",
        &["--kernel", "/nonexistent/vmlinux"],
    );
    assert_eq!(vmm.exit().code(), Some(1), "stderr: {}", vmm.stderr());
    assert!(!vmm.sock.exists(), "the API socket was left behind");
}

/// With `--kernel` the VM starts at once and the API serves it. Needs our guest
/// kernel (`COCOON_GUEST_VMLINUX` or `target/guest-image/vmlinux`); the VM is stopped
/// before a nested KVM would fail it.
#[test]
fn a_command_line_vm_is_served_by_the_api() {
    if !kvm_or_skip("api with --kernel") {
        return;
    }
    let kernel: PathBuf = std::env::var_os("COCOON_GUEST_VMLINUX")
        .map(Into::into)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guest-image/vmlinux")
        });
    if !kernel.exists() {
        eprintln!(
            "SKIP api with --kernel: no guest kernel at {}",
            kernel.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let vsock = dir.path().join("v.sock");
    let mut vmm = Vmm::spawn(
        dir.path(),
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory-mib",
            "256",
            "--serial-log",
            serial.to_str().unwrap(),
            "--vsock-uds",
            vsock.to_str().unwrap(),
        ],
    );
    // The socket is bound before the VM is built: wait for it to run.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, state) = vmm.call("GET", "/vm", "");
        if state["state"] == "running" {
            assert_eq!(state["memory_mib"], 256);
            break;
        }
        assert_eq!(state["state"], "not_started", "{state}");
        assert!(Instant::now() < deadline, "{}", vmm.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, config) = vmm.call("GET", "/vm/config", "");
    assert_eq!(config["boot"]["kernel"]["path"], kernel.to_str().unwrap());
    let (status, v) = vmm.call("PUT", "/vm/config", &config.to_string());
    assert_eq!(status, 409, "configure after start: {v}");
    let (status, v) = vmm.call("PUT", "/vm/start", "");
    assert_eq!(status, 409, "start after start: {v}");
    let (_, devices) = vmm.call("GET", "/vm/devices", "");
    assert_eq!(devices[0]["type"], "vsock", "{devices}");
    assert_eq!(vmm.call("PUT", "/vm/pause", "").0, 204);
    assert_eq!(vmm.call("PUT", "/vm/resume", "").0, 204);
    assert_eq!(vmm.call("PUT", "/vm/stop", "").0, 204);
    assert_eq!(vmm.exit().code(), Some(0), "stderr: {}", vmm.stderr());
    assert!(
        !vmm.sock.exists() && !vsock.exists(),
        "a socket was left behind"
    );
}

//! Supervision of a VM's processes without a guest: shell scripts stand in for QEMU, the
//! vsock device and virtiofsd (they create the sockets the launcher waits for, then
//! sleep). Start, device failure, failed start, detach and re-attach.

use cocoon_hypervisor::{AccelChoice, ExitReason, Role, SharedFsConfig, Vm, VmConfig, VmError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Creates the file after `flag` in the arguments (the device's socket), then sleeps.
const DEVICE: &str = r#"#!/bin/sh
echo $$ > "$0.pid"
while [ $# -gt 0 ] && [ "$1" != "$FLAG" ]; do shift; done
: > "$2"
exec sleep 1000
"#;

struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vmlinux", "initrd"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("share")).unwrap();
        let f = Fakes { dir };
        f.script("qemu", "#!/bin/sh\necho $$ > \"$0.pid\"\nexec sleep 1000\n");
        f.script("vsock", &DEVICE.replace("$FLAG", "--socket"));
        f.script("virtiofsd", &DEVICE.replace("$FLAG", "--socket-path"));
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn script(&self, name: &str, text: &str) {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config(&self) -> VmConfig {
        let mut c = VmConfig::new(self.path("vmlinux"), self.path("initrd"), self.path("run"));
        c.qemu = self.path("qemu");
        c.vsock_backend = self.path("vsock");
        c.virtiofsd = Some(self.path("virtiofsd"));
        c.accel = AccelChoice::Tcg;
        c.shared_fs = Some(SharedFsConfig {
            host_dir: self.path("share"),
            tag: "pod".into(),
        });
        c
    }

    /// The pid a fake wrote when it started.
    fn pid_of(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.path(&format!("{name}.pid"))).unwrap();
        text.trim().parse().unwrap()
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/<pid>; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn assert_gone(pids: &[i32], run_dir: &Path) {
    for pid in pids {
        assert!(!alive(*pid), "pid {pid} left running");
    }
    assert!(!run_dir.exists(), "run dir left behind");
}

async fn start(f: &Fakes) -> (Vm, Vec<i32>) {
    let vm = Vm::start(&f.config().validate().unwrap()).await.unwrap();
    let r = vm.record();
    let roles: Vec<Role> = r.devices.iter().map(|d| d.role).collect();
    assert_eq!(roles, [Role::Virtiofsd, Role::VsockBackend], "start order");
    assert!(f.path("run/virtiofs.sock").exists());
    let pids = vec![r.vmm.pid, r.devices[0].pid, r.devices[1].pid];
    (vm, pids)
}

#[tokio::test]
async fn kill_ends_every_process() {
    let f = Fakes::new();
    let (vm, pids) = start(&f).await;
    let exit = vm.kill().await;
    assert_eq!(exit.reason, ExitReason::Stopped, "{exit}");
    assert_gone(&pids, &f.path("run"));
}

#[tokio::test]
async fn a_dead_virtiofsd_is_a_shared_fs_failure() {
    let f = Fakes::new();
    let (vm, pids) = start(&f).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[1]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), vm.wait())
        .await
        .unwrap();
    let ExitReason::SharedFsFailed(why) = &exit.reason else {
        panic!("{exit}")
    };
    assert!(why.contains("signal: 9"), "{why}");
    assert_gone(&pids, &f.path("run"));
}

#[tokio::test]
async fn a_failed_start_leaves_nothing() {
    let f = Fakes::new();
    f.script("vsock", "#!/bin/sh\necho broken >&2\nexit 1\n");
    let err = Vm::start(&f.config().validate().unwrap())
        .await
        .unwrap_err();
    let VmError::VsockBackend { why, log } = &err else {
        panic!("{err}")
    };
    assert!(
        why.contains("exit status: 1") && log.contains("broken"),
        "{err}"
    );
    assert_gone(&[f.pid_of("virtiofsd")], &f.path("run"));
}

#[tokio::test]
async fn drop_ends_every_process() {
    let f = Fakes::new();
    let (vm, pids) = start(&f).await;
    drop(vm);
    assert!(!f.path("run").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_gone(&pids, &f.path("run"));
}

#[tokio::test]
async fn detached_vm_runs_on_and_is_taken_back() {
    let f = Fakes::new();
    let (vm, pids) = start(&f).await;
    let record = vm.record();
    vm.detach();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pids.iter().all(|p| alive(*p)), "detach ends nothing");
    assert!(f.path("run").exists());

    let vm = Vm::reattach(&record).await.unwrap();
    assert_eq!(vm.record(), record);
    let exit = vm.kill().await;
    assert_eq!(exit.reason, ExitReason::Stopped, "{exit}");
    assert_gone(&pids, &f.path("run"));
}

#[tokio::test]
async fn reattach_to_a_partly_dead_vm_cleans_up() {
    let f = Fakes::new();
    let (vm, pids) = start(&f).await;
    let record = vm.record();
    vm.detach();
    // The vsock device dies while nobody watches.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[2]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = Vm::reattach(&record).await.unwrap_err();
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("vsock device") && source.contains("gone"),
        "{source}"
    );
    assert_gone(&pids, &f.path("run"));
}

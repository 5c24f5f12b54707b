//! A runtime that restarts takes its running VMs back (QEMU; TCG on these machines):
//! `Vm::record` → `Vm::detach` (or the runtime killed outright) → `Vm::reattach`, then
//! the agent answers through the re-attached VM and stopping it leaves nothing.

use cocoon_hypervisor::{
    ExitReason, ProcessRecord, ReattachError, Role, SharedFsConfig, Vm, VmError, VmRecord,
};
use cocoon_proto::agent::v1::{health_response, HealthRequest};
use cocoon_proto::AGENT_VSOCK_PORT;
use cocoon_runtime::agent_client::wait_ready;
use cocoon_runtime::pod_vm::PodVm;
use cocoon_tests::{
    assert_nothing_left, processes_mentioning, scratch, validate, vm_config, READY_TIMEOUT,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Set for the helper process: where it writes its VM's record.
const RECORD_ENV: &str = "COCOON_REATTACH_RECORD";

async fn health_through(vm: &Vm) {
    let (mut agent, _) = wait_ready(vm, AGENT_VSOCK_PORT, READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("agent through the re-attached VM: {e}"));
    let h = agent
        .agent
        .health(HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, health_response::Status::Serving as i32);
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_vm_is_taken_back() {
    let dir = scratch();
    let cfg = vm_config(dir.path(), "vm");
    let run_dir = cfg.run_dir.clone();
    let (pod, _, _) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let PodVm { vm, agent } = pod;
    drop(agent);
    let record = vm.record();
    assert_eq!(record.vmm.pid, vm.pid());
    assert_eq!(record.devices.len(), 1, "{record:?}");
    vm.detach();
    assert!(run_dir.exists(), "detach leaves the VM's files");
    assert_eq!(
        kill(Pid::from_raw(record.vmm.pid), None),
        Ok(()),
        "still running"
    );

    let vm = Vm::reattach(&record).await.expect("reattach");
    assert_eq!(vm.record(), record);
    health_through(&vm).await;
    let exit = vm.stop(Duration::ZERO).await;
    assert_eq!(exit.reason, ExitReason::Stopped, "{exit}");
    assert_nothing_left(&run_dir);
}

/// The helper of the test below: boots a VM with a shared fs, writes its record, and
/// dies by SIGKILL like a crashed runtime. Runs only in the process that test spawns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of reattach_after_the_runtime_was_killed"]
async fn helper_boot_record_and_die() {
    let Some(out) = std::env::var_os(RECORD_ENV).map(PathBuf::from) else {
        return;
    };
    let scratch = out.parent().unwrap();
    let mut cfg = vm_config(scratch, "vm");
    let share = scratch.join("share");
    std::fs::create_dir(&share).unwrap();
    cfg.shared_fs = Some(SharedFsConfig {
        host_dir: share,
        tag: "pod".into(),
    });
    let (pod, _, _) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let json = serde_json::to_string(&pod.vm.record()).unwrap();
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, json).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    kill(Pid::this(), Signal::SIGKILL).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_the_runtime_was_killed() {
    let dir = scratch();
    let record_path = dir.path().join("vm.json");
    let helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_boot_record_and_die",
            "--ignored",
            "--nocapture",
        ])
        .env(RECORD_ENV, &record_path)
        .output()
        .expect("run the helper");
    let json = std::fs::read_to_string(&record_path).unwrap_or_else(|e| {
        panic!(
            "no record from the helper ({e}): {:?}\n{}",
            helper.status,
            String::from_utf8_lossy(&helper.stderr)
        )
    });
    let record: VmRecord = serde_json::from_str(&json).unwrap();
    let roles: Vec<Role> = record.devices.iter().map(|d| d.role).collect();
    assert_eq!(roles, [Role::Virtiofsd, Role::VsockBackend]);
    assert_ne!(
        parent_of(record.vmm.pid),
        std::process::id() as i32,
        "the VMM is not our child"
    );

    let vm = Vm::reattach(&record).await.expect("reattach");
    health_through(&vm).await;
    let exit = vm.stop(Duration::ZERO).await;
    assert_eq!(exit.reason, ExitReason::Stopped, "{exit}");
    assert_eq!(
        (exit.code, exit.signal),
        (None, None),
        "a non-child's status is unknown"
    );
    assert_nothing_left(&record.run_dir);
    let procs = processes_mentioning(&dir.path().join("share"));
    assert!(procs.is_empty(), "virtiofsd left behind: {procs:?}");
}

/// A record whose pid now names another process is refused; that process is left
/// alone, the processes that are still the VM's are killed, the run dir removed.
#[tokio::test]
async fn a_replaced_pid_is_refused() {
    let dir = scratch();
    let run_dir = dir.path().join("vm");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(run_dir.join("console.log"), "").unwrap();
    let mut ours = Command::new("sleep").arg("1000").spawn().unwrap();
    let mut stranger = Command::new("sleep").arg("1000").spawn().unwrap();
    let start_time = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, rest) = stat.rsplit_once(')').unwrap();
        rest.split_whitespace().nth(19).unwrap().parse().unwrap()
    };
    let (ours_pid, stranger_pid) = (ours.id(), stranger.id());
    let (ours_start, stranger_start) = (start_time(ours_pid), start_time(stranger_pid));
    let record = |vsock_start: u64| VmRecord {
        backend: cocoon_hypervisor::Backend::Qemu,
        run_dir: run_dir.clone(),
        vsock_socket: run_dir.join("vsock.sock"),
        console_log: run_dir.join("console.log"),
        accel: cocoon_hypervisor::accel::resolve(cocoon_hypervisor::AccelChoice::Tcg),
        vmm: ProcessRecord {
            role: Role::Vmm,
            pid: ours_pid as i32,
            start_time: ours_start,
        },
        devices: vec![ProcessRecord {
            role: Role::VsockBackend,
            pid: stranger_pid as i32,
            start_time: vsock_start,
        }],
    };
    // The stranger's pid, recorded with another start time: a reused pid.
    let replaced = record(stranger_start + 1);
    let err = Vm::reattach(&replaced).await.unwrap_err();
    let VmError::Reattach { source, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(
            source,
            ReattachError::Replaced {
                role: Role::VsockBackend,
                ..
            }
        ),
        "{source}"
    );
    assert!(
        source.to_string().contains("no longer the vsock device"),
        "{source}"
    );
    assert_eq!(stranger.try_wait().unwrap(), None, "not ours: left alone");
    assert!(!alive(ours_pid), "ours: killed");
    assert!(!run_dir.exists(), "run dir removed");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    let _ = ours.wait(); // reaped by the failed re-attach already

    // A record not shaped as Cocoon writes them is refused without touching anything.
    let mut odd = record(0);
    odd.console_log = PathBuf::from("/etc/passwd");
    let err = Vm::reattach(&odd).await.unwrap_err();
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("bad record"),
        "{err}"
    );
    assert!(Path::new("/etc/passwd").exists());
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

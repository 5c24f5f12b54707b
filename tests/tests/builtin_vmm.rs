//! The builtin VMM (`cocoon-vmm`) as a pod VM backend.
//!
//! The end-to-end scenarios are the QEMU suite's (`scenario`); they need a host whose
//! KVM boots Linux (hardware KVM) and print why they are skipped elsewhere. The
//! start/stop/failure tests run on any `/dev/kvm`, a nested paravirtual one included:
//! there the guest kernel gets as far as its banner, which is all they need.

use cocoon_hypervisor::accel::hardware_kvm;
use cocoon_hypervisor::builtin::api_client::ApiClient;
use cocoon_hypervisor::{AccelChoice, Backend, ExitReason, SharedFsConfig, Vm, VmConfig, VmError};
use cocoon_tests::processes_mentioning;
use cocoon_tests::{assert_nothing_left, bin_dir, scenario, scratch, validate, vm_config};
use std::path::Path;
use std::time::{Duration, Instant};

/// A builtin-backend config on the built guest image.
fn builtin_config(scratch: &Path) -> VmConfig {
    let mut cfg = vm_config(scratch, "vm");
    cfg.backend = Backend::Builtin;
    cfg.vmm = bin_dir().join("cocoon-vmm");
    cfg
}

fn hardware_kvm_or_skip(test: &str) -> bool {
    match hardware_kvm() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIP {test}: needs hardware KVM: {why}");
            false
        }
    }
}

fn kvm_device_or_skip(test: &str) -> bool {
    let present = Path::new("/dev/kvm").exists();
    if !present {
        eprintln!("SKIP {test}: this host has no /dev/kvm");
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_channel_end_to_end() {
    if !hardware_kvm_or_skip("builtin agent_channel_end_to_end") {
        return;
    }
    let dir = scratch();
    scenario::agent_channel_end_to_end(builtin_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_vmm_is_reported_with_its_status() {
    if !hardware_kvm_or_skip("builtin killed_vmm_is_reported_with_its_status") {
        return;
    }
    let dir = scratch();
    scenario::killed_vmm_is_reported_with_its_status(builtin_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_kernel_panic_is_reported_with_the_console() {
    if !hardware_kvm_or_skip("builtin guest_kernel_panic_is_reported_with_the_console") {
        return;
    }
    let dir = scratch();
    scenario::guest_kernel_panic_is_reported_with_the_console(builtin_config(dir.path())).await;
}

/// Start, the console filling up, stop: SIGTERM ends cocoon-vmm with its documented
/// status, the supervisor calls it a stop, and the run directory goes with the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_vm_stops_cleanly_on_any_kvm() {
    if !kvm_device_or_skip("builtin start/stop") {
        return;
    }
    let dir = scratch();
    let mut cfg = builtin_config(dir.path());
    // KVM even where it cannot boot Linux (PVM): the kernel still prints its banner.
    cfg.accel = AccelChoice::Kvm;
    // loglevel before earlyprintk: the boot console replays what is logged by then.
    cfg.kernel_args = vec!["loglevel=7".into(), "earlyprintk=serial,ttyS0".into()];
    let run_dir = cfg.run_dir.clone();
    let started = Instant::now();
    let vm = Vm::start(&validate(&cfg)).await.expect("VM starts");
    assert!(vm.vsock_socket().exists(), "start returns once vsock is up");
    let launched = started.elapsed();
    // The kernel writes tens of lines at once: look at more than the tail an exit keeps.
    while !vm.console_tail(1000).contains("Linux version") {
        assert!(vm.exit().is_none(), "the VM ended early: {:?}", vm.exit());
        assert!(started.elapsed() < Duration::from_secs(60), "no banner");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "builtin: launched in {launched:?}, banner at {:?}",
        started.elapsed()
    );
    let exit = vm.stop(Duration::ZERO).await;
    assert_eq!(exit.reason, ExitReason::Stopped, "{exit}");
    assert_eq!(exit.code, Some(3), "{exit}");
    assert!(!exit.console_tail.is_empty(), "{exit}");
    assert_nothing_left(&run_dir);
}

/// A pod VM with a shared filesystem on cocoon-vmm: virtiofsd runs beside it and the
/// VMM is its vhost-user frontend (the device is on the VM's API, with its tag and
/// socket); the guest kernel starts. Then the VMM is killed with SIGKILL — the hard
/// way, no chance to clean up — and the supervisor reports it killed, ends virtiofsd
/// and removes the run directory: nothing is left. Runs on any /dev/kvm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_fs_vm_killed_leaves_nothing_on_any_kvm() {
    if !kvm_device_or_skip("builtin shared fs + kill -9") {
        return;
    }
    let Some(virtiofsd) = cocoon_hypervisor::virtiofs::find_virtiofsd(None).ok() else {
        eprintln!("SKIP builtin shared fs + kill -9: no virtiofsd (scripts/setup.sh installs it)");
        return;
    };
    let dir = scratch();
    let mut cfg = builtin_config(dir.path());
    cfg.accel = AccelChoice::Kvm;
    cfg.kernel_args = vec!["loglevel=7".into(), "earlyprintk=serial,ttyS0".into()];
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    cfg.shared_fs = Some(SharedFsConfig {
        host_dir: shared,
        tag: "cocoon".into(),
    });
    cfg.virtiofsd = Some(virtiofsd);
    let run_dir = cfg.run_dir.clone();
    let vm = Vm::start(&validate(&cfg)).await.expect("VM starts");
    let procs = processes_mentioning(&run_dir);
    assert!(
        procs.iter().any(|(_, cmd)| cmd.contains("virtiofsd")),
        "virtiofsd runs beside the VMM: {procs:?}"
    );
    let api = ApiClient::new(run_dir.join("api.sock"));
    let devices = api.get("/vm/devices").await.expect("GET /vm/devices");
    let fs = devices
        .as_array()
        .and_then(|d| d.iter().find(|d| d["type"] == "fs"))
        .unwrap_or_else(|| panic!("no fs device: {devices}"));
    assert_eq!(fs["host"]["tag"], "cocoon", "{fs}");
    let state = api.get("/vm").await.expect("GET /vm");
    assert_eq!(state["state"], "running", "{state}");
    let started = Instant::now();
    while !vm.console_tail(1000).contains("Linux version") {
        assert!(vm.exit().is_none(), "the VM ended early: {:?}", vm.exit());
        assert!(started.elapsed() < Duration::from_secs(60), "no banner");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vm.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the VMM");
    let exit = tokio::time::timeout(Duration::from_secs(30), vm.wait())
        .await
        .expect("exit reported");
    assert_eq!(exit.reason, ExitReason::Killed, "{exit}");
    assert_eq!(exit.signal, Some(9), "{exit}");
    drop(vm);
    assert_nothing_left(&run_dir);
}

/// A VM the VMM cannot build fails `Vm::start` with the VMM's own error (its API's
/// answer to the start), and leaves nothing behind.
#[tokio::test(flavor = "current_thread")]
async fn unbootable_kernel_fails_start_with_the_vmm_error() {
    let dir = scratch();
    let kernel = dir.path().join("vmlinux");
    let initrd = dir.path().join("initrd");
    std::fs::write(&kernel, b"not an ELF file").unwrap();
    std::fs::write(&initrd, b"").unwrap();
    let mut cfg = VmConfig::new(&kernel, &initrd, dir.path().join("vm"));
    cfg.backend = Backend::Builtin;
    cfg.accel = AccelChoice::Kvm;
    cfg.vmm = bin_dir().join("cocoon-vmm");
    let err = Vm::start(&validate(&cfg))
        .await
        .expect_err("the VMM cannot load that kernel");
    let VmError::VmmStart { why, log } = &err else {
        panic!("expected VmmStart, got {err}");
    };
    // The VMM's own answer to the start over its API; without /dev/kvm it fails
    // earlier, on opening it.
    assert!(why.starts_with("PUT /vm/start: "), "{why}");
    assert!(why.contains("kernel") || why.contains("/dev/kvm"), "{why}");
    assert!(log.contains("the VM did not start"), "{log}");
    assert_nothing_left(&cfg.run_dir);
}

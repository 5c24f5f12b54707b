//! End-to-end scenarios run on every VM backend: each takes a [`VmConfig`] (QEMU or
//! builtin, from [`crate::vm_config`]) and asserts the same outcome.

use crate::{assert_nothing_left, validate, READY_TIMEOUT};
use cocoon_hypervisor::{ExitReason, VmConfig};
use cocoon_proto::agent::v1::{health_response, HealthRequest};
use cocoon_proto::AGENT_VSOCK_PORT;
use cocoon_runtime::agent_client::{transfer, vsock_channel, AgentClient, ReadyError};
use cocoon_runtime::pod_vm::{PodVm, PodVmError};
use futures::future::join_all;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

const CONNECTIONS: usize = 50;
const BULK: u64 = 64 * 1024 * 1024;

/// Boots a 2-vCPU, 256 MiB pod VM; checks what the agent says about the guest; holds
/// 50 agent connections open at once, each answering; moves 64 MiB each way with
/// checksums compared on both ends; shuts the guest down through the agent and checks
/// that it ended cleanly and left nothing behind.
pub async fn agent_channel_end_to_end(mut cfg: VmConfig) {
    cfg.vcpus = 2;
    cfg.memory_mib = 256;
    let run_dir = cfg.run_dir.clone();
    let (mut pod, details, timings) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    eprintln!("{:?} backend: boot {timings:?}", cfg.backend);

    // What the guest says about itself.
    assert!(details.guest, "the agent must run as PID 1 of the guest");
    assert_eq!(details.vcpus, 2);
    let mib = details.memory_total_bytes / (1024 * 1024);
    assert!((128..=256).contains(&mib), "guest memory {mib} MiB");
    assert!(
        details.kernel_release.starts_with("6.1"),
        "{}",
        details.kernel_release
    );
    let boot = details.boot.unwrap();
    assert!(0 < boot.agent_started_ns && boot.agent_started_ns <= boot.agent_ready_ns);
    assert!(timings.total >= timings.kernel_boot);

    // 50 connections held open at once, each answering.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let ch = vsock_channel(pod.vm.vsock_socket().to_path_buf(), AGENT_VSOCK_PORT)
            .await
            .expect("open connection");
        clients.push(AgentClient::new(ch));
    }
    let calls = clients.iter_mut().map(|c| c.agent.health(HealthRequest {}));
    let answers = join_all(calls).await;
    for a in answers {
        let a = a.expect("health on a concurrent connection").into_inner();
        assert_eq!(a.status, health_response::Status::Serving as i32);
    }

    // 64 MiB each way, checksums compared on both ends.
    transfer::host_to_guest(&mut pod.agent, BULK, 11)
        .await
        .expect("host→guest 64 MiB");
    transfer::guest_to_host(&mut pod.agent, BULK, 12)
        .await
        .expect("guest→host 64 MiB");
    drop(clients);

    let exit = pod.shutdown(Duration::from_secs(20)).await;
    assert_eq!(exit.reason, ExitReason::Shutdown, "{exit}");
    assert_eq!(exit.code, Some(0));
    assert_nothing_left(&run_dir);
}

/// Boots a pod VM, kills its VMM with SIGKILL, and checks the exit names the signal
/// and nothing is left behind.
pub async fn killed_vmm_is_reported_with_its_status(cfg: VmConfig) {
    let run_dir = cfg.run_dir.clone();
    let (pod, _, _) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    kill(Pid::from_raw(pod.vm.pid()), Signal::SIGKILL).expect("kill the VMM");
    let exit = tokio::time::timeout(Duration::from_secs(30), pod.vm.wait())
        .await
        .expect("exit reported");
    assert_eq!(exit.reason, ExitReason::Killed, "{exit}");
    assert_eq!(exit.signal, Some(9));
    assert!(exit.to_string().contains("signal 9"), "{exit}");
    assert_nothing_left(&run_dir);
}

/// Boots a guest without an init: the kernel panics, and boot fails with the VM's
/// exit classified as a kernel panic, the panic line in the console tail.
pub async fn guest_kernel_panic_is_reported_with_the_console(mut cfg: VmConfig) {
    // No init to run: the kernel panics right after boot.
    cfg.kernel_args = vec!["rdinit=/no-such-init".into(), "init=/no-such-init".into()];
    let run_dir = cfg.run_dir.clone();
    let err = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .expect_err("a guest without init cannot become ready");
    let PodVmError::Ready(ReadyError::VmExited { exit }) = err else {
        panic!("expected the VM's exit, got {err}");
    };
    let ExitReason::KernelPanic(line) = &exit.reason else {
        panic!("expected a kernel panic, got {exit}");
    };
    assert!(line.contains("Kernel panic"), "{line}");
    assert!(
        exit.console_tail.contains("Kernel panic"),
        "{}",
        exit.console_tail
    );
    assert_nothing_left(&run_dir);
}

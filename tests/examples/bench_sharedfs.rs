//! Shared filesystem benchmark (virtio-fs through virtiofsd; QEMU, TCG here):
//!
//! 1. what a shared fs adds to a pod VM's start: launch → agent ready, and `Vm::start`
//!    (the host processes up: virtiofsd, the vsock device, QEMU spawned), with and
//!    without a shared fs, interleaved; and to CreateSandbox (the guest's mount);
//! 2. virtiofsd's host memory (VmRSS, PSS, private) idle after boot and after the reads;
//! 3. sequential read of a 64 MiB file with `dd bs=1M` in an exec'd process: from the
//!    shared fs (first read, then repeated) vs from the guest's own tmpfs.
//!
//! Run through `scripts/bench-sharedfs.sh [runs]`.

use cocoon_hypervisor::{Role, SharedFsConfig, Vm, VmConfig};
use cocoon_proto::agent::v1::*;
use cocoon_proto::AGENT_VSOCK_PORT;
use cocoon_runtime::agent_client::{vsock_channel, wait_ready};
use cocoon_runtime::pod_vm::PodVm;
use cocoon_tests::containers::*;
use cocoon_tests::{scratch, validate, vm_config, READY_TIMEOUT};
use std::io::Write;
use std::time::{Duration, Instant};

const FILE_MIB: usize = 64;
const READS: usize = 5;
const GUEST_SHARE: &str = "/run/cocoon/shared/bench";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("runs"))
        .unwrap_or(5);
    let dir = scratch();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let with_fs = |name: &str| {
        let mut c = vm_config(dir.path(), name);
        c.memory_mib = 512;
        c.shared_fs = Some(SharedFsConfig {
            host_dir: share.clone(),
            tag: "bench".into(),
        });
        // To compare virtiofsd options: a wrapper script that changes its arguments.
        c.virtiofsd = std::env::var_os("COCOON_BENCH_VIRTIOFSD").map(Into::into);
        c
    };

    // 1. Start, interleaved.
    let (mut plain, mut shared) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let mut c = vm_config(dir.path(), &format!("plain{i}"));
        c.memory_mib = 512;
        plain.push(boot_once(&c).await);
        shared.push(boot_once(&with_fs(&format!("shared{i}"))).await);
    }
    let total = |v: &[(Duration, Duration)]| median(v.iter().map(|t| t.0).collect());
    let vmm = |v: &[(Duration, Duration)]| median(v.iter().map(|t| t.1).collect());
    println!("start, median of {runs} (launch → agent ready / Vm::start: host processes up):");
    println!(
        "  without shared fs: {:.0} ms / {:.0} ms",
        ms(total(&plain)),
        ms(vmm(&plain))
    );
    println!(
        "  with shared fs:    {:.0} ms / {:.0} ms",
        ms(total(&shared)),
        ms(vmm(&shared))
    );

    // 2 + 3. One VM: memory, reads.
    let mut f = std::fs::File::create(share.join("big")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    for i in 0..FILE_MIB {
        // Not all zeros: nothing on the way may shortcut them.
        block
            .iter_mut()
            .enumerate()
            .for_each(|(j, b)| *b = (i ^ j) as u8);
        f.write_all(&block).unwrap();
    }
    drop(f);
    let (pod, _, _) = PodVm::boot(&validate(&with_fs("reads")), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let virtiofsd = pod
        .vm
        .record()
        .devices
        .iter()
        .find(|d| d.role == Role::Virtiofsd)
        .expect("virtiofsd")
        .pid;
    println!("virtiofsd idle after boot: {}", memory(virtiofsd));

    let channel = vsock_channel(pod.vm.vsock_socket().to_path_buf(), AGENT_VSOCK_PORT)
        .await
        .expect("channel");
    let mut c = Client::new(channel);
    let (plain_sb, shared_sb) = sandbox_cost(&mut c, runs).await;
    println!(
        "CreateSandbox, median of {runs}: {:.1} ms without, {:.1} ms with the shared fs mount",
        ms(plain_sb),
        ms(shared_sb)
    );
    let mut sb = sandbox("bench", &[]);
    sb.shared_filesystems = vec![SharedFs {
        tag: "bench".into(),
        mount_point: GUEST_SHARE.into(),
    }];
    c.create_sandbox(sb).await.expect("create sandbox");
    let mut app = container("bench", "app", spec(&["sleep", "100000"], false, "{}"));
    app.mounts = vec![Mount {
        destination: "/share".into(),
        r#type: "bind".into(),
        source: GUEST_SHARE.into(),
        options: vec!["rbind".into(), "ro".into()],
    }];
    run(&mut c, app).await;

    let first = dd(&mut c, "first", "/share/big").await;
    let mut again = Vec::new();
    for i in 1..READS {
        again.push(dd(&mut c, &format!("again{i}"), "/share/big").await);
    }
    let (_, exit) = exec(&mut c, "app", "cp", &["cp", "/share/big", "/dev/big"]).await;
    assert_eq!(reason(&exit), ExitReason::Completed);
    let mut tmpfs = Vec::new();
    for i in 0..READS {
        tmpfs.push(dd(&mut c, &format!("tmpfs{i}"), "/dev/big").await);
    }
    println!("sequential read of {FILE_MIB} MiB, dd bs=1M in the guest (MB/s):");
    println!("  shared fs, first read:         {first:.0}");
    println!(
        "  shared fs, again (median of {}): {:.0}",
        again.len(),
        median_f(again)
    );
    println!(
        "  guest tmpfs (median of {READS}):       {:.0}",
        median_f(tmpfs)
    );
    println!("virtiofsd after the reads: {}", memory(virtiofsd));

    c.destroy_sandbox(DestroySandboxRequest {
        sandbox_id: "bench".into(),
    })
    .await
    .expect("destroy sandbox");
    drop(c);
    pod.shutdown(Duration::from_secs(20)).await;
}

/// Boots, returns (launch → agent ready, `Vm::start`: the host processes up), shuts
/// down.
async fn boot_once(cfg: &VmConfig) -> (Duration, Duration) {
    let t = Instant::now();
    let vm = Vm::start(&validate(cfg)).await.expect("start");
    let started = t.elapsed();
    let (agent, _) = wait_ready(&vm, AGENT_VSOCK_PORT, READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ready: {e}"));
    let ready = t.elapsed();
    PodVm { vm, agent }.shutdown(Duration::from_secs(20)).await;
    (ready, started)
}

/// CreateSandbox + DestroySandbox round trips, without and with the shared fs mount,
/// interleaved; medians.
async fn sandbox_cost(c: &mut Client, runs: usize) -> (Duration, Duration) {
    let (mut plain, mut shared) = (Vec::new(), Vec::new());
    for i in 0..runs {
        for with_fs in [false, true] {
            let id = format!("s{i}{with_fs}");
            let mut sb = sandbox(&id, &[]);
            if with_fs {
                sb.storage_roots.clear();
                sb.shared_filesystems = vec![SharedFs {
                    tag: "bench".into(),
                    mount_point: format!("/run/cocoon/shared/{id}"),
                }];
            }
            let t = Instant::now();
            c.create_sandbox(sb).await.expect("create sandbox");
            let took = t.elapsed();
            c.destroy_sandbox(DestroySandboxRequest { sandbox_id: id })
                .await
                .expect("destroy sandbox");
            if with_fs { &mut shared } else { &mut plain }.push(took);
        }
    }
    (median(plain), median(shared))
}

/// Reads `path` with `dd bs=1M` in an exec'd process timed by busybox `time`; MB/s.
async fn dd(c: &mut Client, exec_id: &str, path: &str) -> f64 {
    let script = format!("time dd if={path} of=/dev/null bs=1M 2>&1");
    let (out, exit) = exec(c, "app", exec_id, &["sh", "-c", &script]).await;
    assert_eq!(reason(&exit), ExitReason::Completed, "{out}");
    let secs = real_seconds(&out).unwrap_or_else(|| panic!("no time in {out:?}"));
    FILE_MIB as f64 * 1.048576 / secs
}

/// busybox `time`: "real\t0m 0.45s".
fn real_seconds(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with("real"))?;
    let rest = line.trim_start_matches("real").trim();
    let (m, s) = rest.split_once('m')?;
    let s = s.trim().trim_end_matches('s');
    Some(m.trim().parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

fn memory(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let private = field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:");
    format!(
        "VmRSS {} KiB (peak {} KiB), PSS {} KiB, private {} KiB, {} threads",
        field(&status, "VmRSS:"),
        field(&status, "VmHWM:"),
        field(&rollup, "Pss:"),
        private,
        field(&status, "Threads:")
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

//! The pod's shared filesystem (virtio-fs through virtiofsd) in a real pod VM (QEMU;
//! TCG on these machines): an image rootfs and a volume the host bind-mounts under the
//! shared directory after the VM booted reach the guest; a container runs from the
//! rootfs (read-only underneath, its own overlay on top) and writes into the volume,
//! which the host reads.

use cocoon_hypervisor::{ExitReason, SharedFsConfig};
use cocoon_proto::agent::v1::*;
use cocoon_proto::AGENT_VSOCK_PORT;
use cocoon_runtime::agent_client::vsock_channel;
use cocoon_runtime::pod_vm::PodVm;
use cocoon_tests::containers::*;
use cocoon_tests::host_mounts::{busybox_rootfs, mounts_below, BindMount};
use cocoon_tests::{
    assert_nothing_left, processes_mentioning, scratch, validate, vm_config, READY_TIMEOUT,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::Duration;

const TAG: &str = "pod";
/// Where the agent mounts the shared directory in the guest.
const GUEST_SHARE: &str = "/run/cocoon/shared/pod";

fn bind(destination: &str, source: &str) -> Mount {
    Mount {
        destination: destination.into(),
        r#type: "bind".into(),
        source: source.into(),
        options: vec!["rbind".into(), "rw".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_mounted_rootfs_and_volume_reach_the_container() {
    let dir = scratch();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let mut cfg = vm_config(dir.path(), "vm");
    cfg.shared_fs = Some(SharedFsConfig {
        host_dir: share.clone(),
        tag: TAG.into(),
    });
    let run_dir = cfg.run_dir.clone();
    let (pod, _, timings) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    eprintln!("boot with a shared fs: {timings:?}");
    assert!(run_dir.join("virtiofs.sock").exists());

    // After boot, as the runtime will: the image rootfs read-only, a volume read-write.
    let image = dir.path().join("image");
    busybox_rootfs(&image, &["sh", "echo", "cat", "ls", "sleep", "touch"]);
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("in.txt"), "from the host\n").unwrap();
    let rootfs_mount = BindMount::new(&image, &share.join("rootfs/busybox"), true);
    let volume_mount = BindMount::new(&volume, &share.join("volumes/data"), false);

    let channel = vsock_channel(pod.vm.vsock_socket().to_path_buf(), AGENT_VSOCK_PORT)
        .await
        .expect("containers channel");
    let mut c = Client::new(channel);

    // A tag the VM does not have: refused, naming the field; nothing is left of it.
    let err = c
        .create_sandbox(CreateSandboxRequest {
            sandbox_id: "bad".into(),
            shared_filesystems: vec![SharedFs {
                tag: "nope".into(),
                mount_point: "/run/cocoon/shared/nope".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("shared_filesystems[0].tag"), "{err}");

    c.create_sandbox(CreateSandboxRequest {
        sandbox_id: "pod".into(),
        hostname: "pod".into(),
        shared_filesystems: vec![SharedFs {
            tag: TAG.into(),
            mount_point: GUEST_SHARE.into(),
        }],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create sandbox: {e}"));

    // The rootfs comes from the shared fs; /lower is the same read-only directory seen
    // without the overlay.
    let rootfs = format!("{GUEST_SHARE}/rootfs/busybox");
    let script = "cat /data/in.txt; \
        echo hello from the guest > /data/out.txt; \
        if touch /lower/bin/new 2>/dev/null; then echo lower writable; else echo lower read-only; fi; \
        echo scratch > /tmp/t && cat /tmp/t; \
        ls /bin/busybox";
    let mut req = container("pod", "writer", spec(&["sh", "-c", script], false, "{}"));
    req.rootfs = rootfs.clone();
    req.mounts = vec![
        bind("/data", &format!("{GUEST_SHARE}/volumes/data")),
        bind("/lower", &rootfs),
    ];
    run(&mut c, req).await;
    let out = read_all(&mut c, "writer", "").await;
    let exit = wait(&mut c, "writer", "").await;
    assert_eq!(
        reason(&exit),
        cocoon_proto::agent::v1::ExitReason::Completed,
        "{out}"
    );
    assert_eq!(
        out, "from the host\nlower read-only\nscratch\n/bin/busybox\n",
        "container output"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("out.txt")).unwrap(),
        "hello from the guest\n",
        "the host reads what the container wrote"
    );
    assert!(!image.join("bin/new").exists());
    assert!(
        !image.join("tmp/t").exists(),
        "overlay writes stay in the guest"
    );

    // A bind source outside the pod's roots is still refused.
    let mut bad = container("pod", "bad", spec(&["true"], false, "{}"));
    bad.rootfs = rootfs.clone();
    bad.mounts = vec![bind("/data", "/etc")];
    let err = c.create_container(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("mounts[0].source"), "{err}");

    c.destroy_sandbox(DestroySandboxRequest {
        sandbox_id: "pod".into(),
    })
    .await
    .unwrap();
    drop(c);
    let exit = pod.shutdown(Duration::from_secs(20)).await;
    assert_eq!(exit.reason, ExitReason::Shutdown, "{exit}");
    assert_nothing_left(&run_dir);
    let procs = processes_mentioning(&share);
    assert!(procs.is_empty(), "virtiofsd left behind: {procs:?}");

    drop(rootfs_mount);
    drop(volume_mount);
    let left = mounts_below(dir.path());
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// virtiofsd dying takes the VM down, reported as a shared filesystem failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_virtiofsd_ends_the_vm() {
    let dir = scratch();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let mut cfg = vm_config(dir.path(), "vm");
    cfg.shared_fs = Some(SharedFsConfig {
        host_dir: share.clone(),
        tag: TAG.into(),
    });
    let run_dir = cfg.run_dir.clone();
    // Booted: QEMU has connected to virtiofsd.
    let (pod, _, _) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let vm = &pod.vm;
    let virtiofsd = vm
        .record()
        .devices
        .iter()
        .find(|d| d.role == cocoon_hypervisor::Role::Virtiofsd)
        .expect("virtiofsd recorded")
        .pid;
    kill(Pid::from_raw(virtiofsd), Signal::SIGKILL).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), vm.wait())
        .await
        .expect("the VM ends");
    assert!(
        matches!(exit.reason, ExitReason::SharedFsFailed(_)),
        "{exit}"
    );
    assert_nothing_left(&run_dir);
    assert!(processes_mentioning(&share).is_empty());
    assert!(
        Path::new(&share).exists(),
        "the shared directory is the runtime's"
    );
}

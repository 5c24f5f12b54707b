//! Pods for tests: a busybox rootfs, OCI specs, and short-hands over the Containers API.

use cocoon_proto::agent::v1::containers_client::ContainersClient;
use cocoon_proto::agent::v1::*;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

pub type Client = ContainersClient<Channel>;

/// A busybox rootfs in `dir/rootfs` from Debian's busybox-static: /bin/busybox and a
/// symlink per applet.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static) is needed");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

/// An OCI runtime spec as a container runtime on the host would send it.
pub fn spec(args: &[&str], terminal: bool, resources: serde_json::Value) -> String {
    let caps = serde_json::json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "ignored",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "resources": resources,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
    .to_string()
}

pub fn no_limits() -> serde_json::Value {
    serde_json::json!({})
}

pub fn sandbox_request(id: &str, roots: &[&Path], shared: &[Namespace]) -> CreateSandboxRequest {
    CreateSandboxRequest {
        sandbox_id: id.into(),
        hostname: "pod-host".into(),
        dns: Some(DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec![],
        }),
        // Unique per test and process: the cgroup it creates is the one it removes.
        cgroup_parent: format!("cocoon-test-{}-{id}", std::process::id()),
        shared_namespaces: shared.iter().map(|n| *n as i32).collect(),
        storage_roots: roots
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect(),
        ..Default::default()
    }
}

pub fn container_request(
    sandbox: &str,
    id: &str,
    rootfs: &Path,
    spec: String,
) -> CreateContainerRequest {
    CreateContainerRequest {
        sandbox_id: sandbox.into(),
        container_id: id.into(),
        oci_spec_json: spec,
        rootfs: rootfs.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// Creates and starts a container.
pub async fn run(c: &mut Client, req: CreateContainerRequest) {
    let id = req.container_id.clone();
    c.create_container(req)
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e}"));
    c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("start {id}: {e}"));
}

/// Everything a process writes to `stream` until it closes it.
pub async fn read_all(c: &mut Client, container: &str, exec: &str, stream: OutputStream) -> String {
    let mut s = c
        .read_output(ReadOutputRequest {
            container_id: container.into(),
            exec_id: exec.into(),
            stream: stream as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        out.extend_from_slice(&chunk.data);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn wait(c: &mut Client, container: &str, exec: &str) -> ProcessExit {
    c.wait_process(WaitProcessRequest {
        container_id: container.into(),
        exec_id: exec.into(),
        forget: false,
    })
    .await
    .unwrap()
    .into_inner()
}

/// Runs `args` in `container` without a terminal; returns stdout and the exit.
pub async fn exec(
    c: &mut Client,
    container: &str,
    exec_id: &str,
    args: &[&str],
) -> (String, ProcessExit) {
    c.exec_process(ExecProcessRequest {
        container_id: container.into(),
        exec_id: exec_id.into(),
        process: Some(Process {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("exec {args:?}: {e}"));
    let out = read_all(c, container, exec_id, OutputStream::Stdout).await;
    (out, wait(c, container, exec_id).await)
}

pub fn reason(e: &ProcessExit) -> ExitReason {
    ExitReason::try_from(e.reason).unwrap()
}

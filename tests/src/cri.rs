//! A real `cocoond` for end-to-end tests: its own config, socket, state and root dirs
//! under a scratch directory, started from this workspace's build, driven through the
//! CRI client over its socket. Dropping it kills the daemon and every VM process it
//! left, unmounts what is under its state dir and removes the directories.

use crate::{bin_dir, guest_image, processes_mentioning, READY_TIMEOUT};
use cocoon_runtime::cri_client::{connect, CriClient};
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cocoond {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub root_dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Cocoond {
    /// Starts a daemon whose config is the defaults, the built guest image and test
    /// image, and `extra` TOML appended. With `COCOON_TEST_BACKEND=builtin` (set by
    /// `scripts/test-builtin.sh` on hardware-KVM hosts) its pods run on `cocoon-vmm`
    /// instead of QEMU.
    pub async fn start(extra: &str) -> Cocoond {
        // Short: VM sockets live under the state dir.
        let dir = tempfile::Builder::new()
            .prefix("cri-")
            .tempdir_in("/tmp")
            .expect("scratch");
        let image = guest_image();
        let layout = image
            .kernel
            .parent()
            .expect("guest image dir")
            .join("test-image");
        let socket = dir.path().join("cocoon.sock");
        let state_dir = dir.path().join("s");
        let root_dir = dir.path().join("root");
        let config = dir.path().join("cocoond.toml");
        let text = format!(
            "socket = {socket:?}\nstate_dir = {state_dir:?}\nroot_dir = {root_dir:?}\nlog_level = \"info,cocoon_runtime=debug\"\ntest_image_layout = {layout:?}\n\n[vm]\nkernel = {kernel:?}\ninitrd = {initrd:?}\nvsock_backend = {vsock:?}\n{backend}\n[pod]\nready_timeout_s = {ready}\n\n{extra}\n",
            kernel = image.kernel,
            initrd = image.initrd,
            vsock = bin_dir().join("cocoon-vsock"),
            ready = READY_TIMEOUT.as_secs(),
            backend = backend_toml(),
        );
        std::fs::write(&config, text).expect("write config");
        let mut d = Cocoond {
            dir,
            socket,
            state_dir,
            root_dir,
            config,
            child: None,
        };
        d.spawn().await;
        d
    }

    /// (Re)starts the daemon process and waits for its socket to answer.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cocoond.log"))
            .expect("daemon log");
        let child = Command::new(bin_dir().join("cocoond"))
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start cocoond (cargo build --bins first)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = connect(&self.socket).await {
                if c.runtime.version(VersionRequest::default()).await.is_ok() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("cocoond exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "cocoond did not serve within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> CriClient {
        connect(&self.socket).await.expect("connect to cocoond")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cocoond.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` of the daemon alone (its VMs keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A directory for a pod's logs inside the scratch dir.
    pub fn log_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join("logs").join(name);
        std::fs::create_dir_all(&d).expect("log dir");
        d
    }

    /// Processes (VMs, virtiofsd, vsock devices) still running for this daemon's pods.
    pub fn vm_processes(&self) -> Vec<(u32, String)> {
        processes_mentioning(&self.state_dir)
    }

    /// Mounts still present under the state dir.
    pub fn mounts(&self) -> Vec<PathBuf> {
        cocoon_runtime::shared_fs::mounts_under(&self.state_dir)
    }

    /// Asserts no pod left anything: processes, mounts, VM run dirs, pod dirs.
    pub fn assert_clean(&self) {
        assert!(
            self.vm_processes().is_empty(),
            "processes left: {:?}",
            self.vm_processes()
        );
        assert!(self.mounts().is_empty(), "mounts left: {:?}", self.mounts());
        for sub in ["vm", "pods"] {
            let d = self.state_dir.join(sub);
            let left: Vec<_> = std::fs::read_dir(&d)
                .map(|e| e.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "left under {}: {left:?}", d.display());
        }
        let records: Vec<_> = std::fs::read_dir(self.root_dir.join("pods"))
            .map(|e| e.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(records.is_empty(), "pod records left: {records:?}");
    }
}

impl Drop for Cocoond {
    fn drop(&mut self) {
        self.kill9();
        for (pid, _) in processes_mentioning(&self.state_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in cocoon_runtime::shared_fs::mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A pod config with metadata `name` (uid and namespace derived), logs under `log_dir`.
/// The `[vm]` lines choosing the backend `COCOON_TEST_BACKEND` names (QEMU, the
/// default, needs none).
fn backend_toml() -> String {
    match std::env::var("COCOON_TEST_BACKEND").as_deref() {
        Ok("builtin") => format!(
            "backend = \"builtin\"\nvmm = {:?}\n",
            bin_dir().join("cocoon-vmm")
        ),
        Ok("qemu") | Ok("") | Err(_) => String::new(),
        Ok(other) => panic!("COCOON_TEST_BACKEND={other}: expected qemu or builtin"),
    }
}

pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `cmd` from `image`, logging to `<name>.log`.
pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// Runs a pod and returns its id.
pub async fn run_pod(c: &mut CriClient, config: PodSandboxConfig) -> String {
    c.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id
}

/// Creates and starts a container; returns its id.
pub async fn start_container(
    c: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = c
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("StartContainer");
    id
}

pub async fn status(c: &mut CriClient, id: &str) -> ContainerStatus {
    c.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status")
}

/// Waits until the container has exited; returns its status.
pub async fn wait_exited(c: &mut CriClient, id: &str, timeout: Duration) -> ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(c, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?} after {timeout:?}",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops and removes a pod (idempotent on both).
pub async fn remove_pod(c: &mut CriClient, id: &str) {
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("StopPodSandbox");
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("RemovePodSandbox");
}

//! The builtin backend's configuration, and its API client against cocoon-vmm's real
//! API server run in this process (`cocoon_vmm::api`), with a thread standing in for
//! cocoon-vmm's main thread (it builds the VM the API asks for).

use super::api_client::{ApiClient, ApiError};
use super::*;
use crate::accel::Detected;
use crate::config::{Programs, VmConfig};
use cocoon_vmm::api::{ApiServer, ApiSocket, OwnerRequest, VmSlot};
use cocoon_vmm::{VmExit, Vmm};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn valid(config: VmConfig) -> ValidVmConfig {
    ValidVmConfig {
        config,
        accel: Detected {
            accel: Accel::Kvm,
            reason: String::new(),
        },
        programs: Programs::Builtin {
            vmm: "/usr/bin/cocoon-vmm".into(),
            virtiofsd: None,
        },
    }
}

fn paths() -> BuiltinPaths {
    BuiltinPaths {
        console_log: "/run/x/console.log".into(),
        vsock_socket: "/run/x/vsock.sock".into(),
        metrics: "/run/x/metrics.json".into(),
        api_socket: "/run/x/api.sock".into(),
        virtiofs_socket: "/run/x/virtiofs.sock".into(),
    }
}

#[test]
fn every_setting_reaches_the_vmm() {
    let mut config = VmConfig::new("/k/vmlinux", "/k/initrd, spaced", "/run/x");
    config.memory_mib = 512;
    config.vcpus = 2;
    config.guest_cid = 7;
    config.kernel_args = vec!["loglevel=7".into()];
    let cfg = valid(config);
    let args: Vec<String> = vmm_args(&paths())
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "--api-sock",
            "/run/x/api.sock",
            "--metrics",
            "/run/x/metrics.json"
        ]
    );
    // The JSON cocoon-vmm's `PUT /vm/config` gets.
    let sent = serde_json::to_value(vmm_config(&cfg, &paths())).unwrap();
    assert_eq!(
        sent,
        json!({
            "vcpus": 2,
            "memory_mib": 512,
            "boot": {"kernel": {
                "path": "/k/vmlinux",
                "cmdline": "console=ttyS0 reboot=t panic=-1 quiet loglevel=7",
                "initrd": "/k/initrd, spaced",
            }},
            "serial": {"file": "/run/x/console.log"},
            "debug_exit": false,
            "entropy": false,
            "vsock": {"guest_cid": 7, "uds_path": "/run/x/vsock.sock"},
            "drives": [],
            "nets": [],
            "shared_fs": [],
        })
    );
    // And cocoon-vmm's own parser takes it back unchanged.
    let parsed = cocoon_vmm::api::parse_config(sent.to_string().as_bytes()).unwrap();
    assert_eq!(parsed, vmm_config(&cfg, &paths()));
}

#[test]
fn a_shared_fs_is_a_virtio_fs_device_on_virtiofsd_socket() {
    let mut config = VmConfig::new("/k/vmlinux", "/k/initrd", "/run/x");
    config.shared_fs = Some(crate::virtiofs::SharedFsConfig {
        host_dir: "/var/lib/cocoon/pods/p/shared".into(),
        tag: "cocoon".into(),
    });
    let sent = serde_json::to_value(vmm_config(&valid(config), &paths())).unwrap();
    assert_eq!(
        sent["shared_fs"],
        json!([{"socket_path": "/run/x/virtiofs.sock", "tag": "cocoon"}])
    );
    let parsed = cocoon_vmm::api::parse_config(sent.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.shared_fs.len(), 1);
}

/// cocoon-vmm's API on `dir/api.sock`, and its owner thread: it builds what the API
/// starts, and returns how the VM ended (`None`: stopped before a start).
struct InProcessVmm {
    api: Option<ApiServer>,
    owner: Option<std::thread::JoinHandle<Option<VmExit>>>,
    client: ApiClient,
}

impl InProcessVmm {
    fn new(dir: &Path) -> InProcessVmm {
        let path = dir.join("api.sock");
        let socket = ApiSocket::bind(&path).unwrap();
        let slot = Arc::new(VmSlot::new());
        let api = ApiServer::spawn(socket, slot.clone()).unwrap();
        let owner = std::thread::spawn(move || loop {
            match slot.next_request() {
                OwnerRequest::Start(config) => {
                    if let Ok(vmm) = slot.finish_start(Vmm::start(*config)) {
                        vmm.wait();
                        return Some(vmm.shutdown());
                    }
                }
                OwnerRequest::Stop => return None,
            }
        });
        InProcessVmm {
            api: Some(api),
            owner: Some(owner),
            client: ApiClient::new(path),
        }
    }

    /// Waits for the owner thread (after a stop), then ends the API thread.
    fn end(mut self) -> Option<VmExit> {
        let exit = self.owner.take().unwrap().join().unwrap();
        self.api.take().unwrap().stop();
        exit
    }
}

/// A 64-bit guest that writes `x` to COM1 forever:
/// `top: mov dx, 0x3f8; mov al, 'x'; out dx, al; jmp top`.
const CHATTY: [u8; 9] = [0x66, 0xba, 0xf8, 0x03, 0xb0, b'x', 0xee, 0xeb, 0xf7];

#[tokio::test]
async fn the_config_arrives_as_sent_and_bad_ones_come_back_with_the_vmms_message() {
    let dir = tempfile::tempdir().unwrap();
    let vmm = InProcessVmm::new(dir.path());
    let mut config = VmConfig::new("/k/vmlinux", "/k/initrd", "/run/x");
    config.vcpus = 4;
    let sent = vmm_config(&valid(config), &paths());
    vmm.client.put_config(&sent).await.unwrap();
    let got = vmm.client.get("/vm/config").await.unwrap();
    assert_eq!(got, serde_json::to_value(&sent).unwrap());

    let mut bad = sent.clone();
    bad.vcpus = 0;
    let e = vmm.client.put_config(&bad).await.unwrap_err();
    let ApiError::Status {
        status, message, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(
        (*status, message.as_str()),
        (400, "vcpus: 0 is not in 1..=32")
    );
    assert_eq!(
        e.to_string(),
        "PUT /vm/config: vcpus: 0 is not in 1..=32 (400)"
    );
    let e = vmm.client.pause().await.unwrap_err();
    assert!(
        matches!(e, ApiError::Status { status: 409, .. }),
        "pause before start: {e}"
    );
    vmm.client.stop().await.unwrap();
    assert_eq!(vmm.end(), None);
}

#[tokio::test]
async fn a_raw_guest_starts_pauses_resumes_and_stops_over_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let vmm = InProcessVmm::new(dir.path());
    let serial = dir.path().join("serial.log");
    let config = cocoon_vmm::VmConfig {
        memory_mib: 16,
        serial: SerialOutput::File(serial.clone()),
        ..cocoon_vmm::VmConfig::new(BootSource::Raw {
            code: CHATTY.to_vec(),
            load_addr: 0x10_0000,
        })
    };
    let started = configure_and_start(&vmm.client, &config).await;
    if !Path::new("/dev/kvm").exists() {
        // No KVM: the VMM's own error comes back.
        let e = started.unwrap_err();
        assert!(matches!(e, ApiError::Status { status: 500, .. }), "{e}");
        eprintln!("SKIP running the raw guest: this host has no /dev/kvm ({e})");
        vmm.client.stop().await.unwrap();
        assert_eq!(vmm.end(), None);
        return;
    }
    started.unwrap();
    let e = vmm.client.start().await.unwrap_err();
    assert!(matches!(e, ApiError::Status { status: 409, .. }), "{e}");
    assert_eq!(vmm.client.get("/vm").await.unwrap()["state"], "running");
    vmm.client.pause().await.unwrap();
    assert_eq!(vmm.client.get("/vm").await.unwrap()["state"], "paused");
    vmm.client.resume().await.unwrap();
    let metrics = vmm.client.get("/metrics").await.unwrap();
    assert_eq!(metrics["vcpus"].as_array().map(Vec::len), Some(1));
    vmm.client.stop().await.unwrap();
    assert_eq!(vmm.end(), Some(VmExit::Stopped));
    let written = std::fs::read_to_string(&serial).unwrap();
    assert!(
        !written.is_empty() && written.bytes().all(|b| b == b'x'),
        "{written:?}"
    );
}

#[tokio::test]
async fn a_missing_socket_and_a_silent_server_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let client = ApiClient::new(dir.path().join("nothing.sock"));
    let e = client.start().await.unwrap_err();
    assert!(matches!(e, ApiError::Connect { .. }), "{e}");

    // Accepts and never answers.
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(conn);
    });
    let client = ApiClient::new(&path).with_timeout(Duration::from_millis(200));
    let e = client.start().await.unwrap_err();
    assert!(matches!(e, ApiError::Timeout { .. }), "{e}");
    server.abort();

    // Answers with a non-JSON error: its text is the message.
    let path = dir.path().join("plain.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await;
        let _ = conn
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom")
            .await;
    });
    let e = ApiClient::new(&path).start().await.unwrap_err();
    assert_eq!(e.to_string(), "PUT /vm/start: boom (500)");
}

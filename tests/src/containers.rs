//! Driving the agent's Containers API: OCI specs for the busybox test image and the
//! calls the in-VM tests and the agent benchmark share.

use cocoon_proto::agent::v1::containers_client::ContainersClient;
use cocoon_proto::agent::v1::*;
use tonic::transport::Channel;

/// The read-only busybox image rootfs in the guest, and the storage root above it.
pub use cocoon_runtime::oci::{TEST_ROOTFS as GUEST_ROOTFS, TEST_STORAGE as GUEST_STORAGE};

pub type Client = ContainersClient<Channel>;

/// An OCI runtime spec running `args` in the busybox rootfs; `resources` is OCI
/// `LinuxResources` JSON.
pub fn spec(args: &[&str], terminal: bool, resources: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let resources = serde_json::from_str(resources).expect("resources JSON");
    cocoon_runtime::oci::basic_spec(&args, terminal, resources)
}

pub fn container(sandbox: &str, id: &str, spec: String) -> CreateContainerRequest {
    CreateContainerRequest {
        sandbox_id: sandbox.into(),
        container_id: id.into(),
        oci_spec_json: spec,
        rootfs: GUEST_ROOTFS.into(),
        ..Default::default()
    }
}

pub fn sandbox(id: &str, shared: &[Namespace]) -> CreateSandboxRequest {
    CreateSandboxRequest {
        sandbox_id: id.into(),
        hostname: id.into(),
        shared_namespaces: shared.iter().map(|n| *n as i32).collect(),
        storage_roots: vec![GUEST_STORAGE.into()],
        ..Default::default()
    }
}

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

pub async fn read_all(c: &mut Client, container: &str, exec: &str) -> String {
    let req = ReadOutputRequest {
        container_id: container.into(),
        exec_id: exec.into(),
        stream: OutputStream::Stdout as i32,
    };
    let mut s = c.read_output(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        out.extend_from_slice(&chunk.data);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn wait(c: &mut Client, container: &str, exec: &str) -> ProcessExit {
    let req = WaitProcessRequest {
        container_id: container.into(),
        exec_id: exec.into(),
        forget: false,
    };
    c.wait_process(req).await.unwrap().into_inner()
}

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
    let out = read_all(c, container, exec_id).await;
    (out, wait(c, container, exec_id).await)
}

pub fn reason(e: &ProcessExit) -> ExitReason {
    ExitReason::try_from(e.reason).unwrap()
}

//! One container in a pod VM, start to finish: what `cocoon vm run` does.

use crate::agent_client::AgentClient;
use crate::oci::{basic_spec, TEST_ROOTFS, TEST_STORAGE};
use cocoon_proto::agent::v1::{
    CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest, Namespace, OutputStream,
    ProcessExit, ReadOutputRequest, StartContainerRequest, WaitProcessRequest,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

const SANDBOX: &str = "cocoon-run";
const CONTAINER: &str = "main";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{step}: {status}")]
    Agent {
        step: &'static str,
        status: tonic::Status,
    },
    #[error("write container output")]
    Output(#[from] std::io::Error),
}

fn agent(step: &'static str) -> impl FnOnce(tonic::Status) -> RunError {
    move |status| RunError::Agent { step, status }
}

/// Runs `args` in a container of the built-in busybox test image in a fresh pod,
/// copying its stdout and stderr to `out` and `err` as they come; returns its exit. The
/// pod is destroyed afterwards, also when the run fails.
pub async fn run_test_image<O, E>(
    client: &mut AgentClient,
    hostname: &str,
    args: &[String],
    out: &mut O,
    err: &mut E,
) -> Result<ProcessExit, RunError>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let c = &mut client.containers;
    c.create_sandbox(CreateSandboxRequest {
        sandbox_id: SANDBOX.into(),
        hostname: hostname.into(),
        shared_namespaces: vec![
            Namespace::Network as i32,
            Namespace::Ipc as i32,
            Namespace::Uts as i32,
        ],
        storage_roots: vec![TEST_STORAGE.into()],
        ..Default::default()
    })
    .await
    .map_err(agent("CreateSandbox"))?;
    let result = run_in_sandbox(client, args, out, err).await;
    let destroyed = client
        .containers
        .destroy_sandbox(DestroySandboxRequest {
            sandbox_id: SANDBOX.into(),
        })
        .await
        .map_err(agent("DestroySandbox"));
    let exit = result?;
    destroyed?;
    Ok(exit)
}

async fn run_in_sandbox<O, E>(
    client: &mut AgentClient,
    args: &[String],
    out: &mut O,
    err: &mut E,
) -> Result<ProcessExit, RunError>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let c = &mut client.containers;
    c.create_container(CreateContainerRequest {
        sandbox_id: SANDBOX.into(),
        container_id: CONTAINER.into(),
        oci_spec_json: basic_spec(args, false, serde_json::json!({})),
        rootfs: TEST_ROOTFS.into(),
        ..Default::default()
    })
    .await
    .map_err(agent("CreateContainer"))?;
    c.start_container(StartContainerRequest {
        container_id: CONTAINER.into(),
    })
    .await
    .map_err(agent("StartContainer"))?;
    let mut stdout = client.containers.clone();
    let mut stderr = client.containers.clone();
    let (o, e) = tokio::join!(
        copy_output(&mut stdout, OutputStream::Stdout, out),
        copy_output(&mut stderr, OutputStream::Stderr, err)
    );
    o?;
    e?;
    client
        .containers
        .wait_process(WaitProcessRequest {
            container_id: CONTAINER.into(),
            exec_id: String::new(),
            forget: false,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(agent("WaitProcess"))
}

async fn copy_output<W: AsyncWrite + Unpin>(
    c: &mut cocoon_proto::agent::v1::containers_client::ContainersClient<tonic::transport::Channel>,
    stream: OutputStream,
    to: &mut W,
) -> Result<(), RunError> {
    let mut chunks = c
        .read_output(ReadOutputRequest {
            container_id: CONTAINER.into(),
            exec_id: String::new(),
            stream: stream as i32,
        })
        .await
        .map_err(agent("ReadOutput"))?
        .into_inner();
    while let Some(chunk) = chunks.message().await.map_err(agent("ReadOutput"))? {
        to.write_all(&chunk.data).await?;
        to.flush().await?;
    }
    Ok(())
}

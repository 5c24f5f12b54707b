//! `cocoon stop`: stop containers or whole pods.

use super::error::{describe, Error, RpcResult};
use super::resolve::{self, Target};
use crate::cri_client::CriClient;
use k8s_cri::v1::{StopContainerRequest, StopPodSandboxRequest};
use std::io::Write;

/// Stop containers or pods (each ID is tried as a container first, then as a pod).
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds a container has to exit after SIGTERM before it is killed.
    #[arg(short, long, default_value_t = 10)]
    pub timeout: u32,
    /// Ids, unique id prefixes or names.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Prints each id stopped; a failure is reported and the rest still tried. Returns the exit
/// code: 1 when any failed.
pub async fn stop(
    client: &mut CriClient,
    args: &StopArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, Error> {
    let mut code = 0;
    for id in &args.ids {
        match stop_one(client, id, args.timeout).await {
            Ok(()) => writeln!(out, "{id}")?,
            Err(e) => {
                writeln!(err, "cocoon: {id}: {}", describe(&e))?;
                code = 1;
            }
        }
    }
    Ok(code)
}

async fn stop_one(client: &mut CriClient, query: &str, timeout: u32) -> Result<(), Error> {
    match resolve::find_container_or_pod(client, query).await? {
        Target::Container(c) => stop_container(client, &c.id, i64::from(timeout)).await,
        Target::Pod(p) => stop_pod(client, &p.id).await,
    }
}

pub async fn stop_container(
    client: &mut CriClient,
    container_id: &str,
    timeout_secs: i64,
) -> Result<(), Error> {
    let request = StopContainerRequest {
        container_id: container_id.to_string(),
        timeout: timeout_secs,
    };
    client
        .runtime
        .stop_container(request)
        .await
        .rpc("stop container")?;
    Ok(())
}

pub async fn stop_pod(client: &mut CriClient, pod_id: &str) -> Result<(), Error> {
    let request = StopPodSandboxRequest {
        pod_sandbox_id: pod_id.to_string(),
    };
    client
        .runtime
        .stop_pod_sandbox(request)
        .await
        .rpc("stop pod")?;
    Ok(())
}

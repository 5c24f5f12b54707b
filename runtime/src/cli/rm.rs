//! `cocoon rm`: remove containers, or pods with all their containers.

use super::error::{describe, Error, RpcResult};
use super::resolve::{self, Target};
use super::run_spec::{CREATED_BY_LABEL, CREATED_BY_RUN};
use super::stop::{stop_container, stop_pod};
use crate::cri_client::CriClient;
use k8s_cri::v1::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
    PodSandbox, RemoveContainerRequest, RemovePodSandboxRequest,
};
use std::io::Write;

/// Remove containers, or pods with all their containers (each ID is tried as a container
/// first). A pod `cocoon run` made goes with its last container.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Stop (kill) what is still running first.
    #[arg(short, long)]
    pub force: bool,
    /// Ids, unique id prefixes or names.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Prints each id removed; a failure is reported and the rest still tried. Returns the exit
/// code: 1 when any failed.
pub async fn rm(
    client: &mut CriClient,
    args: &RmArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, Error> {
    let mut code = 0;
    for id in &args.ids {
        let removed = match resolve::find_container_or_pod(client, id).await {
            Ok(Target::Container(c)) => remove_container(client, &c, args.force).await,
            Ok(Target::Pod(p)) => remove_pod(client, &p, args.force).await,
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => writeln!(out, "{id}")?,
            Err(e) => {
                writeln!(err, "cocoon: {id}: {}", describe(&e))?;
                code = 1;
            }
        }
    }
    Ok(code)
}

async fn remove_container(
    client: &mut CriClient,
    container: &Container,
    force: bool,
) -> Result<(), Error> {
    if container.state == ContainerState::ContainerRunning as i32 {
        if !force {
            return Err(Error::Refused(format!(
                "container {} is running: stop it first, or use -f",
                name_of(container)
            )));
        }
        stop_container(client, &container.id, 0).await?;
    }
    let request = RemoveContainerRequest {
        container_id: container.id.clone(),
    };
    client
        .runtime
        .remove_container(request)
        .await
        .rpc("remove container")?;

    let pod_id = &container.pod_sandbox_id;
    let pods = resolve::list_pods(client).await?;
    let made_by_run = pods.iter().any(|p| {
        &p.id == pod_id
            && p.labels.get(CREATED_BY_LABEL).map(String::as_str) == Some(CREATED_BY_RUN)
    });
    if made_by_run && containers_in(client, pod_id, false).await?.is_empty() {
        tracing::debug!(pod_id, "removing the pod cocoon run made for the container");
        stop_pod(client, pod_id).await?;
        remove_pod_sandbox(client, pod_id).await?;
    }
    Ok(())
}

async fn remove_pod(client: &mut CriClient, pod: &PodSandbox, force: bool) -> Result<(), Error> {
    if !force && !containers_in(client, &pod.id, true).await?.is_empty() {
        let name = pod.metadata.as_ref().map_or(pod.id.as_str(), |m| &m.name);
        return Err(Error::Refused(format!(
            "pod {name} has running containers: stop it first, or use -f"
        )));
    }
    stop_pod(client, &pod.id).await?;
    remove_pod_sandbox(client, &pod.id).await
}

pub async fn remove_pod_sandbox(client: &mut CriClient, pod_id: &str) -> Result<(), Error> {
    let request = RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.to_string(),
    };
    client
        .runtime
        .remove_pod_sandbox(request)
        .await
        .rpc("remove pod")?;
    Ok(())
}

async fn containers_in(
    client: &mut CriClient,
    pod_id: &str,
    running_only: bool,
) -> Result<Vec<Container>, Error> {
    let filter = ContainerFilter {
        pod_sandbox_id: pod_id.to_string(),
        state: running_only.then_some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let request = ListContainersRequest {
        filter: Some(filter),
    };
    Ok(client
        .runtime
        .list_containers(request)
        .await
        .rpc("list containers")?
        .containers)
}

fn name_of(container: &Container) -> &str {
    container
        .metadata
        .as_ref()
        .map_or(container.id.as_str(), |m| &m.name)
}

//! `cocoon ps`: containers, with the pods they run in.

use super::error::{Error, RpcResult};
use super::output::{ago, container_state, short_id, Table};
use super::resolve::list_pods;
use crate::cri_client::CriClient;
use k8s_cri::v1::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
    PodSandbox,
};
use std::collections::HashMap;
use std::io::Write;
use std::time::SystemTime;

/// List containers (running ones unless -a).
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Containers in every state.
    #[arg(short, long)]
    pub all: bool,
    /// Only the full container ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn ps(client: &mut CriClient, args: &PsArgs, out: &mut impl Write) -> Result<(), Error> {
    let filter = (!args.all).then(|| ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    });
    let mut containers = client
        .runtime
        .list_containers(ListContainersRequest { filter })
        .await
        .rpc("list containers")?
        .containers;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    if args.quiet {
        for c in &containers {
            writeln!(out, "{}", c.id)?;
        }
        return Ok(());
    }
    let pods = list_pods(client).await?;
    containers_table(&containers, &pods, SystemTime::now()).write(out)?;
    Ok(())
}

pub fn containers_table(containers: &[Container], pods: &[PodSandbox], now: SystemTime) -> Table {
    let pod_names: HashMap<&str, &str> = pods
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                p.metadata.as_ref().map_or("", |m| m.name.as_str()),
            )
        })
        .collect();
    let mut table = Table::new(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "POD-ID",
        "POD",
    ]);
    for c in containers {
        let image = c.image.as_ref().map_or("", |i| {
            if i.user_specified_image.is_empty() {
                &i.image
            } else {
                &i.user_specified_image
            }
        });
        table.row(vec![
            short_id(&c.id).into(),
            image.into(),
            ago(c.created_at, now),
            container_state(c.state).into(),
            c.metadata.as_ref().map_or("", |m| &m.name).into(),
            short_id(&c.pod_sandbox_id).into(),
            pod_names
                .get(c.pod_sandbox_id.as_str())
                .copied()
                .unwrap_or("")
                .into(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerMetadata, ImageSpec, PodSandboxMetadata};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn containers_show_with_their_pod_names() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let containers = [Container {
            id: "c0ffee00112233445566".into(),
            pod_sandbox_id: "beef0011223344556677".into(),
            metadata: Some(ContainerMetadata {
                name: "web".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            state: ContainerState::ContainerRunning as i32,
            created_at: 880 * 1_000_000_000,
            ..Default::default()
        }];
        let pods = [PodSandbox {
            id: "beef0011223344556677".into(),
            metadata: Some(PodSandboxMetadata {
                name: "web-pod".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let mut out = Vec::new();
        containers_table(&containers, &pods, now)
            .write(&mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONTAINER       IMAGE     CREATED         STATE     NAME   POD-ID          POD\n\
             c0ffee0011223   busybox   2 minutes ago   Running   web    beef001122334   web-pod\n"
        );
    }
}

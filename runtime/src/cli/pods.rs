//! `cocoon pods`: pod sandboxes, each a VM.

use super::error::Error;
use super::output::{ago, pod_state, short_id, Table};
use super::resolve::list_pods;
use crate::cri_client::CriClient;
use k8s_cri::v1::PodSandbox;
use std::io::Write;
use std::time::SystemTime;

/// List pods.
#[derive(Debug, clap::Args)]
pub struct PodsArgs {
    /// Only the full pod ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn pods(
    client: &mut CriClient,
    args: &PodsArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    let mut pods = list_pods(client).await?;
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    if args.quiet {
        for p in &pods {
            writeln!(out, "{}", p.id)?;
        }
        return Ok(());
    }
    pods_table(&pods, SystemTime::now()).write(out)?;
    Ok(())
}

pub fn pods_table(pods: &[PodSandbox], now: SystemTime) -> Table {
    let mut table = Table::new(&["POD-ID", "CREATED", "STATE", "NAME", "NAMESPACE", "RUNTIME"]);
    for p in pods {
        let (name, namespace) = p
            .metadata
            .as_ref()
            .map_or(("", ""), |m| (m.name.as_str(), m.namespace.as_str()));
        let runtime = if p.runtime_handler.is_empty() {
            "(default)"
        } else {
            &p.runtime_handler
        };
        table.row(vec![
            short_id(&p.id).into(),
            ago(p.created_at, now),
            pod_state(p.state).into(),
            name.into(),
            namespace.into(),
            runtime.into(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{PodSandboxMetadata, PodSandboxState};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn pods_show_name_namespace_and_runtime() {
        let now = UNIX_EPOCH + Duration::from_secs(7200);
        let pods = [PodSandbox {
            id: "0123456789abcdef0123".into(),
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            state: PodSandboxState::SandboxReady as i32,
            created_at: 3600 * 1_000_000_000,
            ..Default::default()
        }];
        let mut out = Vec::new();
        pods_table(&pods, now).write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POD-ID          CREATED      STATE   NAME   NAMESPACE   RUNTIME\n\
             0123456789abc   1 hour ago   Ready   web    default     (default)\n"
        );
    }
}

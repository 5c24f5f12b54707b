//! Finding the container or pod a person means: by full id, name or unique id prefix.

use super::error::{Error, RpcResult};
use super::output::short_id;
use crate::cri_client::CriClient;
use k8s_cri::v1::{Container, ListContainersRequest, ListPodSandboxRequest, PodSandbox};

/// Something that can be named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no {kind} {query:?}")]
    NotFound { kind: &'static str, query: String },
    #[error("{query:?} could be any of these {kind}s: {}", .matches.join(", "))]
    Ambiguous {
        kind: &'static str,
        query: String,
        /// Each as `short-id (name)`.
        matches: Vec<String>,
    },
}

/// The index of the candidate `query` means: the one with that id; else the one with that
/// name; else the one whose id starts with it. Several names or prefixes matching is an
/// error listing them.
pub fn resolve(
    kind: &'static str,
    query: &str,
    candidates: &[Candidate<'_>],
) -> Result<usize, ResolveError> {
    if query.is_empty() {
        return Err(ResolveError::NotFound {
            kind,
            query: query.into(),
        });
    }
    if let Some(i) = candidates.iter().position(|c| c.id == query) {
        return Ok(i);
    }
    let rules: [&dyn Fn(&Candidate<'_>) -> bool; 2] =
        [&|c| c.name == query, &|c| c.id.starts_with(query)];
    for rule in rules {
        let found: Vec<usize> = (0..candidates.len())
            .filter(|&i| rule(&candidates[i]))
            .collect();
        match found[..] {
            [] => continue,
            [i] => return Ok(i),
            _ => {
                return Err(ResolveError::Ambiguous {
                    kind,
                    query: query.into(),
                    matches: found
                        .iter()
                        .map(|&i| {
                            let c = candidates[i];
                            format!("{} ({})", short_id(c.id), c.name)
                        })
                        .collect(),
                })
            }
        }
    }
    Err(ResolveError::NotFound {
        kind,
        query: query.into(),
    })
}

/// Every container, in whatever state.
pub async fn list_containers(client: &mut CriClient) -> Result<Vec<Container>, Error> {
    let request = ListContainersRequest { filter: None };
    Ok(client
        .runtime
        .list_containers(request)
        .await
        .rpc("list containers")?
        .containers)
}

/// Every pod, in whatever state.
pub async fn list_pods(client: &mut CriClient) -> Result<Vec<PodSandbox>, Error> {
    let request = ListPodSandboxRequest { filter: None };
    Ok(client
        .runtime
        .list_pod_sandbox(request)
        .await
        .rpc("list pods")?
        .items)
}

fn container_candidates(containers: &[Container]) -> Vec<Candidate<'_>> {
    containers
        .iter()
        .map(|c| Candidate {
            id: &c.id,
            name: c.metadata.as_ref().map_or("", |m| &m.name),
        })
        .collect()
}

fn pod_candidates(pods: &[PodSandbox]) -> Vec<Candidate<'_>> {
    pods.iter()
        .map(|p| Candidate {
            id: &p.id,
            name: p.metadata.as_ref().map_or("", |m| &m.name),
        })
        .collect()
}

/// The container `query` means.
pub async fn find_container(client: &mut CriClient, query: &str) -> Result<Container, Error> {
    let mut containers = list_containers(client).await?;
    let i = resolve("container", query, &container_candidates(&containers))?;
    Ok(containers.swap_remove(i))
}

/// The pod `query` means.
pub async fn find_pod(client: &mut CriClient, query: &str) -> Result<PodSandbox, Error> {
    let mut pods = list_pods(client).await?;
    let i = resolve("pod", query, &pod_candidates(&pods))?;
    Ok(pods.swap_remove(i))
}

/// What `stop` and `rm` act on.
#[derive(Debug, Clone)]
pub enum Target {
    Container(Container),
    Pod(PodSandbox),
}

/// The container `query` means, or else the pod.
pub async fn find_container_or_pod(client: &mut CriClient, query: &str) -> Result<Target, Error> {
    match find_container(client, query).await {
        Ok(container) => Ok(Target::Container(container)),
        Err(Error::Resolve(ResolveError::NotFound { .. })) => match find_pod(client, query).await {
            Ok(pod) => Ok(Target::Pod(pod)),
            Err(Error::Resolve(ResolveError::NotFound { .. })) => {
                Err(Error::Resolve(ResolveError::NotFound {
                    kind: "container or pod",
                    query: query.into(),
                }))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Candidate<'static>; 4] = [
        Candidate {
            id: "abc123",
            name: "web",
        },
        Candidate {
            id: "abd456",
            name: "db",
        },
        Candidate {
            id: "ffe789",
            name: "abc",
        },
        Candidate {
            id: "ffe000",
            name: "db",
        },
    ];

    #[test]
    fn full_ids_names_and_unique_prefixes_resolve() {
        assert_eq!(resolve("container", "abd456", &ALL), Ok(1));
        assert_eq!(resolve("container", "web", &ALL), Ok(0));
        assert_eq!(resolve("container", "abc1", &ALL), Ok(0));
        assert_eq!(resolve("container", "ffe7", &ALL), Ok(2));
    }

    #[test]
    fn a_name_wins_over_an_id_prefix() {
        assert_eq!(resolve("container", "abc", &ALL), Ok(2));
    }

    #[test]
    fn ambiguity_lists_the_candidates() {
        let err = resolve("container", "ab", &ALL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"ab\" could be any of these containers: abc123 (web), abd456 (db)"
        );
        let err = resolve("pod", "db", &ALL).unwrap_err();
        assert!(matches!(err, ResolveError::Ambiguous { ref matches, .. } if matches.len() == 2));
    }

    #[test]
    fn nothing_matching_is_not_found() {
        assert_eq!(
            resolve("pod", "zzz", &ALL).unwrap_err().to_string(),
            "no pod \"zzz\""
        );
        assert!(resolve("pod", "", &ALL).is_err());
        assert!(resolve("pod", "a", &[]).is_err());
    }
}

//! `runtime.v1.RuntimeService`: each RPC is a thin call into the daemon.

use super::status::to_status;
use super::{CRI_VERSION, RUNTIME_NAME};
use crate::daemon::Daemon;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct Runtime {
    pub daemon: Arc<Daemon>,
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> R<T> {
    Ok(Response::new(t))
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented by cocoon yet (streaming exec/attach/port-forward arrive with their own issue; use ExecSync)"
    ))
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _: Request<VersionRequest>) -> R<VersionResponse> {
        ok(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        })
    }

    async fn run_pod_sandbox(&self, r: Request<RunPodSandboxRequest>) -> R<RunPodSandboxResponse> {
        let r = r.into_inner();
        let id = self
            .daemon
            .run_pod(r.config, &r.runtime_handler)
            .await
            .map_err(to_status)?;
        ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<StopPodSandboxRequest>,
    ) -> R<StopPodSandboxResponse> {
        self.daemon
            .stop_pod(&r.into_inner().pod_sandbox_id)
            .await
            .map_err(to_status)?;
        ok(StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<RemovePodSandboxRequest>,
    ) -> R<RemovePodSandboxResponse> {
        self.daemon
            .remove_pod(&r.into_inner().pod_sandbox_id)
            .await
            .map_err(to_status)?;
        ok(RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<PodSandboxStatusRequest>,
    ) -> R<PodSandboxStatusResponse> {
        let r = r.into_inner();
        ok(self
            .daemon
            .pod_status(&r.pod_sandbox_id, r.verbose)
            .map_err(to_status)?)
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<ListPodSandboxRequest>,
    ) -> R<ListPodSandboxResponse> {
        ok(ListPodSandboxResponse {
            items: self.daemon.list_pods(r.into_inner().filter),
        })
    }

    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> R<CreateContainerResponse> {
        let r = r.into_inner();
        let id = self
            .daemon
            .create_container(&r.pod_sandbox_id, r.config)
            .await
            .map_err(to_status)?;
        ok(CreateContainerResponse { container_id: id })
    }

    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> R<StartContainerResponse> {
        self.daemon
            .start_container(&r.into_inner().container_id)
            .await
            .map_err(to_status)?;
        ok(StartContainerResponse {})
    }

    async fn stop_container(&self, r: Request<StopContainerRequest>) -> R<StopContainerResponse> {
        let r = r.into_inner();
        let timeout = Duration::from_secs(r.timeout.max(0) as u64);
        self.daemon
            .stop_container(&r.container_id, timeout)
            .await
            .map_err(to_status)?;
        ok(StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> R<RemoveContainerResponse> {
        self.daemon
            .remove_container(&r.into_inner().container_id)
            .await
            .map_err(to_status)?;
        ok(RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        r: Request<ListContainersRequest>,
    ) -> R<ListContainersResponse> {
        ok(ListContainersResponse {
            containers: self.daemon.list_containers(r.into_inner().filter),
        })
    }

    async fn container_status(
        &self,
        r: Request<ContainerStatusRequest>,
    ) -> R<ContainerStatusResponse> {
        let r = r.into_inner();
        ok(self
            .daemon
            .container_status(&r.container_id, r.verbose)
            .map_err(to_status)?)
    }

    async fn update_container_resources(
        &self,
        r: Request<UpdateContainerResourcesRequest>,
    ) -> R<UpdateContainerResourcesResponse> {
        let r = r.into_inner();
        self.daemon
            .update_container(&r.container_id, r.linux)
            .await
            .map_err(to_status)?;
        ok(UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        r: Request<ReopenContainerLogRequest>,
    ) -> R<ReopenContainerLogResponse> {
        self.daemon
            .reopen_log(&r.into_inner().container_id)
            .map_err(to_status)?;
        ok(ReopenContainerLogResponse {})
    }

    async fn exec_sync(&self, r: Request<ExecSyncRequest>) -> R<ExecSyncResponse> {
        let r = r.into_inner();
        ok(self
            .daemon
            .exec_sync(&r.container_id, r.cmd, r.timeout)
            .await
            .map_err(to_status)?)
    }

    async fn exec(&self, _: Request<ExecRequest>) -> R<ExecResponse> {
        Err(unimplemented("Exec"))
    }

    async fn attach(&self, _: Request<AttachRequest>) -> R<AttachResponse> {
        Err(unimplemented("Attach"))
    }

    async fn port_forward(&self, _: Request<PortForwardRequest>) -> R<PortForwardResponse> {
        Err(unimplemented("PortForward"))
    }

    async fn container_stats(
        &self,
        r: Request<ContainerStatsRequest>,
    ) -> R<ContainerStatsResponse> {
        let stats = self
            .daemon
            .container_stats(&r.into_inner().container_id)
            .await
            .map_err(to_status)?;
        ok(ContainerStatsResponse { stats: Some(stats) })
    }

    async fn list_container_stats(
        &self,
        r: Request<ListContainerStatsRequest>,
    ) -> R<ListContainerStatsResponse> {
        let stats = self
            .daemon
            .list_container_stats(r.into_inner().filter)
            .await
            .map_err(to_status)?;
        ok(ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<PodSandboxStatsRequest>,
    ) -> R<PodSandboxStatsResponse> {
        let stats = self
            .daemon
            .pod_stats(&r.into_inner().pod_sandbox_id)
            .await
            .map_err(to_status)?;
        ok(PodSandboxStatsResponse { stats: Some(stats) })
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<ListPodSandboxStatsRequest>,
    ) -> R<ListPodSandboxStatsResponse> {
        let stats = self
            .daemon
            .list_pod_stats(r.into_inner().filter)
            .await
            .map_err(to_status)?;
        ok(ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(
        &self,
        _: Request<UpdateRuntimeConfigRequest>,
    ) -> R<UpdateRuntimeConfigResponse> {
        // kubelet sends the pod CIDR here; it matters once CNI networking exists.
        ok(UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, r: Request<StatusRequest>) -> R<StatusResponse> {
        let verbose = r.into_inner().verbose;
        let mut info = HashMap::new();
        if verbose {
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "handlers": self.daemon.config.handler_names(),
                    "stateDir": self.daemon.config.raw.state_dir,
                    "rootDir": self.daemon.config.raw.root_dir,
                })
                .to_string(),
            );
        }
        ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        reason: String::new(),
                        message: String::new(),
                    },
                    RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NoNetworkPlugin".into(),
                        message: "cocoon has no CNI networking yet: pods get loopback only".into(),
                    },
                ],
            }),
            info,
            runtime_handlers: self
                .daemon
                .config
                .handler_names()
                .into_iter()
                .map(|name| RuntimeHandler {
                    name,
                    features: Some(RuntimeHandlerFeatures {
                        recursive_read_only_mounts: false,
                        user_namespaces: false,
                    }),
                })
                .collect(),
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        })
    }

    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> R<CheckpointContainerResponse> {
        Err(unimplemented("CheckpointContainer"))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        let rx = self.daemon.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| match e {
            Ok(e) => Some(Ok(e)),
            // A subscriber too slow for the backlog misses events; kubelet then relists.
            Err(_) => None,
        });
        ok(Box::pin(stream))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> R<ListMetricDescriptorsResponse> {
        ok(ListMetricDescriptorsResponse {
            descriptors: vec![],
        })
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> R<ListPodSandboxMetricsResponse> {
        ok(ListPodSandboxMetricsResponse {
            pod_metrics: vec![],
        })
    }

    async fn runtime_config(&self, _: Request<RuntimeConfigRequest>) -> R<RuntimeConfigResponse> {
        ok(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}

use tokio_stream::StreamExt as _;

//! A CRI server pretending to be cocoond, for testing the commands end to end over a unix
//! socket without VMs.
//!
//! A container's command is a script of steps: `out:TEXT` and `err:TEXT` write a line to
//! stdout or stderr, `part:TEXT` writes a partial stdout line, `exit:N` exits with `N`,
//! `sleep` runs until stopped. Every step takes a few milliseconds, so that the log grows
//! while it is followed.

use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use k8s_cri::v1::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
pub struct State {
    pub pods: Vec<PodSandbox>,
    pub containers: Vec<FakeContainer>,
    pub images: Vec<Image>,
    next: u64,
}

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub container: Container,
    pub status: ContainerStatus,
    pub command: Vec<String>,
}

impl State {
    fn id(&mut self, kind: char) -> String {
        self.next += 1;
        format!("{kind}{:03}{}", self.next, "0".repeat(60))
    }

    fn container(&mut self, id: &str) -> Result<&mut FakeContainer, Status> {
        self.containers
            .iter_mut()
            .find(|c| c.container.id == id)
            .ok_or_else(|| Status::not_found(format!("no container {id}")))
    }

    fn exit(&mut self, id: &str, code: i32) {
        if let Ok(c) = self.container(id) {
            if c.container.state != ContainerState::ContainerExited as i32 {
                c.container.state = ContainerState::ContainerExited as i32;
                c.status.state = ContainerState::ContainerExited as i32;
                c.status.exit_code = code;
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeCri {
    pub state: Arc<Mutex<State>>,
    logs: PathBuf,
}

impl FakeCri {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves a fake cocoond at `<dir>/cri.sock`, its logs under `dir`.
pub fn serve(dir: &Path) -> (PathBuf, FakeCri) {
    let socket = dir.join("cri.sock");
    let fake = FakeCri {
        state: Arc::default(),
        logs: dir.to_path_buf(),
    };
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the fake's socket");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(fake.clone()))
        .add_service(ImageServiceServer::new(fake.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    (socket, fake)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Runs a container's script, writing its log the way a CRI runtime does.
async fn run_script(state: Arc<Mutex<State>>, id: String, path: PathBuf, script: Vec<String>) {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the fake's log");
    let stamp = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut code = 0;
    for step in &script {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (kind, text) = step.split_once(':').unwrap_or((step, ""));
        let line = match kind {
            "out" => format!("{} stdout F {text}\n", stamp()),
            "err" => format!("{} stderr F {text}\n", stamp()),
            "part" => format!("{} stdout P {text}\n", stamp()),
            "exit" => {
                code = text.parse().unwrap_or(1);
                break;
            }
            "sleep" => return,
            _ => format!("{} stderr F unknown step {step}\n", stamp()),
        };
        log.write_all(line.as_bytes())
            .expect("write the fake's log");
    }
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.exit(&id, code);
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("the fake has no {what}")))
}

#[tonic::async_trait]
impl RuntimeService for FakeCri {
    type GetContainerEventsStream = tokio_stream::Empty<Result<ContainerEventResponse, Status>>;

    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake-cocoond".into(),
            runtime_version: "0.0.1".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let mut state = self.state();
        let id = state.id('p');
        state.pods.push(PodSandbox {
            id: id.clone(),
            metadata: config.metadata,
            state: PodSandboxState::SandboxReady as i32,
            created_at: now_ns(),
            labels: config.labels,
            annotations: config.annotations,
            runtime_handler: request.runtime_handler,
        });
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let mut state = self.state();
        let ids: Vec<String> = state
            .containers
            .iter()
            .filter(|c| c.container.pod_sandbox_id == id)
            .map(|c| c.container.id.clone())
            .collect();
        for c in ids {
            state.exit(&c, 137);
        }
        if let Some(pod) = state.pods.iter_mut().find(|p| p.id == id) {
            pod.state = PodSandboxState::SandboxNotready as i32;
        }
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let mut state = self.state();
        state.pods.retain(|p| p.id != id);
        state
            .containers
            .retain(|c| c.container.pod_sandbox_id != id);
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        _: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        unimplemented("PodSandboxStatus")
    }

    async fn list_pod_sandbox(
        &self,
        _: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let items = self.state().pods.clone();
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let mut state = self.state();
        if !state.pods.iter().any(|p| p.id == request.pod_sandbox_id) {
            return Err(Status::not_found("no such pod"));
        }
        let id = state.id('c');
        let log_path = self.logs.join(format!("{id}.log"));
        let container = Container {
            id: id.clone(),
            pod_sandbox_id: request.pod_sandbox_id,
            metadata: config.metadata.clone(),
            image: config.image.clone(),
            state: ContainerState::ContainerCreated as i32,
            created_at: now_ns(),
            labels: config.labels.clone(),
            ..Default::default()
        };
        let status = ContainerStatus {
            id: id.clone(),
            metadata: config.metadata,
            state: ContainerState::ContainerCreated as i32,
            image: config.image,
            log_path: log_path.to_string_lossy().into_owned(),
            ..Default::default()
        };
        state.containers.push(FakeContainer {
            container,
            status,
            command: config.command,
        });
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let mut state = self.state();
        let c = state.container(&id)?;
        c.container.state = ContainerState::ContainerRunning as i32;
        c.status.state = ContainerState::ContainerRunning as i32;
        let script = c.command.clone();
        let path = PathBuf::from(&c.status.log_path);
        tokio::spawn(run_script(self.state.clone(), id, path, script));
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let mut state = self.state();
        state.container(&id)?;
        state.exit(&id, 137);
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let mut state = self.state();
        if state.container(&id)?.container.state == ContainerState::ContainerRunning as i32 {
            return Err(Status::failed_precondition("container is running"));
        }
        state.containers.retain(|c| c.container.id != id);
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .state()
            .containers
            .iter()
            .map(|c| c.container.clone())
            .filter(|c| filter.state.is_none_or(|s| s.state == c.state))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || filter.pod_sandbox_id == c.pod_sandbox_id
            })
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let id = request.into_inner().container_id;
        let status = self.state().container(&id)?.status.clone();
        Ok(Response::new(ContainerStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn update_container_resources(
        &self,
        _: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        _: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        unimplemented("ReopenContainerLog")
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let request = request.into_inner();
        if self
            .state()
            .container(&request.container_id)?
            .container
            .state
            != ContainerState::ContainerRunning as i32
        {
            return Err(Status::failed_precondition("container is not running"));
        }
        Ok(Response::new(ExecSyncResponse {
            stdout: format!("{}\n", request.cmd.join(" ")).into_bytes(),
            stderr: format!("timeout {}\n", request.timeout).into_bytes(),
            exit_code: if request.cmd.first().map(String::as_str) == Some("false") {
                1
            } else {
                0
            },
        }))
    }

    async fn exec(&self, _: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        unimplemented("Exec")
    }

    async fn attach(&self, _: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        unimplemented("Attach")
    }

    async fn port_forward(
        &self,
        _: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        unimplemented("PortForward")
    }

    async fn container_stats(
        &self,
        _: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        unimplemented("ContainerStats")
    }

    async fn list_container_stats(
        &self,
        _: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        unimplemented("ListContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        unimplemented("PodSandboxStats")
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        unimplemented("ListPodSandboxStats")
    }

    async fn update_runtime_config(
        &self,
        _: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        unimplemented("UpdateRuntimeConfig")
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![RuntimeCondition {
                    r#type: "RuntimeReady".into(),
                    status: true,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        unimplemented("CheckpointContainer")
    }

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        unimplemented("ListPodSandboxMetrics")
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        unimplemented("RuntimeConfig")
    }
}

#[tonic::async_trait]
impl ImageService for FakeCri {
    async fn list_images(
        &self,
        _: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let images = self.state().images.clone();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let name = request.into_inner().image.unwrap_or_default().image;
        let image = self
            .state()
            .images
            .iter()
            .find(|i| i.id == name || i.repo_tags.contains(&name))
            .cloned();
        Ok(Response::new(ImageStatusResponse {
            image,
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let name = request.into_inner().image.unwrap_or_default().image;
        if name.starts_with("missing") {
            return Err(Status::not_found(format!("{name}: manifest unknown")));
        }
        let mut state = self.state();
        let id = format!("sha256:{:064}", state.images.len() + 1);
        state.images.push(Image {
            id: id.clone(),
            repo_tags: vec![name],
            size: 4_261_000,
            ..Default::default()
        });
        Ok(Response::new(PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        _: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        unimplemented("ImageFsInfo")
    }
}

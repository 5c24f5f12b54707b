//! `cocoon.agent.v1.Containers`: thin handlers, one file per RPC. Each validates its
//! request, calls into `sandbox`/`container`, and maps errors at the one edge,
//! [`crate::error::to_status`].

mod create_container;
mod create_sandbox;
mod destroy_sandbox;
mod events;
mod exec_process;
mod list_processes;
mod read_output;
mod remove_container;
mod resize_tty;
mod signal_process;
mod start_container;
mod stats_container;
mod update_container;
mod wait_process;
mod write_stdin;

use crate::error::to_status;
use crate::pods::Pods;
use cocoon_proto::agent::v1::containers_server::Containers;
use cocoon_proto::agent::v1::*;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct ContainersService {
    pods: Arc<Pods>,
}

impl ContainersService {
    pub fn new(pods: Arc<Pods>) -> Self {
        Self { pods }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn reply<T>(r: crate::error::Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(to_status)
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn create_sandbox(
        &self,
        r: Request<CreateSandboxRequest>,
    ) -> Result<Response<CreateSandboxResponse>, Status> {
        reply(create_sandbox::handle(&self.pods, r.into_inner()).await)
    }

    async fn destroy_sandbox(
        &self,
        r: Request<DestroySandboxRequest>,
    ) -> Result<Response<DestroySandboxResponse>, Status> {
        reply(destroy_sandbox::handle(&self.pods, r.into_inner()).await)
    }

    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        reply(create_container::handle(&self.pods, r.into_inner()).await)
    }

    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        reply(start_container::handle(&self.pods, r.into_inner()).await)
    }

    async fn exec_process(
        &self,
        r: Request<ExecProcessRequest>,
    ) -> Result<Response<ExecProcessResponse>, Status> {
        reply(exec_process::handle(&self.pods, r.into_inner()).await)
    }

    async fn signal_process(
        &self,
        r: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        reply(signal_process::handle(&self.pods, r.into_inner()))
    }

    async fn wait_process(
        &self,
        r: Request<WaitProcessRequest>,
    ) -> Result<Response<ProcessExit>, Status> {
        reply(wait_process::handle(&self.pods, r.into_inner()).await)
    }

    async fn resize_tty(
        &self,
        r: Request<ResizeTtyRequest>,
    ) -> Result<Response<ResizeTtyResponse>, Status> {
        reply(resize_tty::handle(&self.pods, r.into_inner()))
    }

    async fn write_stdin(
        &self,
        r: Request<Streaming<StdinChunk>>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        write_stdin::handle(&self.pods, r.into_inner())
            .await
            .map(Response::new)
    }

    type ReadOutputStream = BoxStream<OutputChunk>;

    async fn read_output(
        &self,
        r: Request<ReadOutputRequest>,
    ) -> Result<Response<Self::ReadOutputStream>, Status> {
        reply(read_output::handle(&self.pods, r.into_inner()))
    }

    async fn stats_container(
        &self,
        r: Request<StatsContainerRequest>,
    ) -> Result<Response<ContainerStats>, Status> {
        reply(stats_container::handle(&self.pods, r.into_inner()))
    }

    async fn update_container(
        &self,
        r: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        reply(update_container::handle(&self.pods, r.into_inner()))
    }

    async fn list_processes(
        &self,
        r: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        reply(list_processes::handle(&self.pods, r.into_inner()))
    }

    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        reply(remove_container::handle(&self.pods, r.into_inner()).await)
    }

    type EventsStream = BoxStream<Event>;

    async fn events(
        &self,
        _r: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        Ok(Response::new(events::handle(&self.pods)))
    }
}

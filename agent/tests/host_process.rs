//! The agent as an ordinary host process on a unix socket: its API without a VM.

use cocoon_proto::agent::v1::{
    agent_client::AgentClient, diagnostics_client::DiagnosticsClient, health_response,
    source_message, DataChunk, GetGuestDetailsRequest, HealthRequest, ShutdownRequest,
    SourceRequest,
};
use cocoon_proto::PatternStream;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

mod common;
use common::Agent;

#[tokio::test]
async fn health_details_and_shutdown() {
    let mut agent = Agent::start();
    let mut client = AgentClient::new(agent.channel().await);

    let health = client.health(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(health.status, health_response::Status::Serving as i32);
    assert_eq!(health.agent_version, env!("CARGO_PKG_VERSION"));

    let d = client
        .get_guest_details(GetGuestDetailsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!d.guest, "a host process must say it is not a guest");
    assert!(!d.kernel_release.is_empty());
    assert!(d.vcpus >= 1);
    assert!(d.memory_total_bytes > 0);
    let boot = d.boot.unwrap();
    assert!(boot.agent_started_ns > 0);
    assert!(boot.agent_started_ns <= boot.agent_ready_ns);
    assert!(boot.agent_ready_ns <= boot.now_ns);

    client.shutdown(ShutdownRequest {}).await.unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
    assert!(!Path::new(&agent.socket).exists(), "socket left behind");
}

#[tokio::test]
async fn bulk_data_both_ways_is_intact() {
    let agent = Agent::start();
    let channel = agent.channel().await;
    let mut diag = DiagnosticsClient::new(channel);
    let size = 3 * 1024 * 1024 + 5; // not a multiple of the chunk or the word

    let mut data = vec![0u8; size];
    PatternStream::new(42).fill(&mut data);
    let expected = Sha256::digest(&data).to_vec();
    let chunks: Vec<DataChunk> = data
        .chunks(100_000)
        .map(|c| DataChunk { data: c.to_vec() })
        .collect();
    let summary = diag
        .sink(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.bytes, size as u64);
    assert_eq!(summary.sha256, expected);

    let mut stream = diag
        .source(SourceRequest {
            size: size as u64,
            chunk_size: 64 * 1024,
            seed: 42,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut summary = None;
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.kind.unwrap() {
            source_message::Kind::Data(d) => got.extend_from_slice(&d),
            source_message::Kind::Summary(s) => summary = Some(s),
        }
    }
    assert_eq!(got, data, "guest→host bytes differ from the pattern");
    assert_eq!(summary.unwrap().sha256, expected);
}

#[tokio::test]
async fn bad_chunk_size_is_invalid_argument() {
    let agent = Agent::start();
    let mut diag = DiagnosticsClient::new(agent.channel().await);
    let err = diag
        .source(SourceRequest {
            size: 10,
            chunk_size: 7,
            seed: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("chunk_size"));
}

#[test]
fn listen_address_errors_are_clear() {
    let out = Command::new(env!("CARGO_BIN_EXE_cocoon-agent"))
        .args(["--listen", "tcp:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vsock:<port> or unix:<path>"), "{stderr}");
}

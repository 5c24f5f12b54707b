//! Bulk data through the agent (Diagnostics service), verified by SHA-256 on both ends.

use super::AgentClient;
use cocoon_proto::agent::v1::{source_message, DataChunk, SourceRequest};
use cocoon_proto::PatternStream;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Chunk size of both directions: a multiple of 8 (the pattern's word).
pub const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("{what}: {got} bytes, expected {expected}")]
    Length {
        what: &'static str,
        got: u64,
        expected: u64,
    },
    #[error("{0}: checksum mismatch")]
    Checksum(&'static str),
    #[error("guest→host: stream ended without a summary")]
    NoSummary,
}

/// Sends `bytes` of the `seed` pattern to the guest; checks the agent saw the same bytes.
pub async fn host_to_guest(
    client: &mut AgentClient,
    bytes: u64,
    seed: u64,
) -> Result<Duration, TransferError> {
    let mut pattern = PatternStream::new(seed);
    let mut hasher = Sha256::new();
    let mut chunks = Vec::new();
    let mut left = bytes;
    // Generated up front so the measurement is the channel, not the generator.
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let mut data = vec![0u8; n];
        pattern.fill(&mut data);
        hasher.update(&data);
        chunks.push(DataChunk { data });
        left -= n as u64;
    }
    let expected = hasher.finalize().to_vec();
    let start = Instant::now();
    let summary = client
        .diagnostics
        .sink(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    let took = start.elapsed();
    if summary.bytes != bytes {
        return Err(TransferError::Length {
            what: "host→guest",
            got: summary.bytes,
            expected: bytes,
        });
    }
    if summary.sha256 != expected {
        return Err(TransferError::Checksum("host→guest"));
    }
    Ok(took)
}

/// Receives `bytes` of the `seed` pattern from the guest; checks them against the
/// agent's checksum and against the pattern computed here.
pub async fn guest_to_host(
    client: &mut AgentClient,
    bytes: u64,
    seed: u64,
) -> Result<Duration, TransferError> {
    let start = Instant::now();
    let mut stream = client
        .diagnostics
        .source(SourceRequest {
            size: bytes,
            chunk_size: CHUNK as u32,
            seed,
        })
        .await?
        .into_inner();
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut summary = None;
    while let Some(msg) = stream.next().await {
        match msg?.kind {
            Some(source_message::Kind::Data(d)) => {
                got += d.len() as u64;
                hasher.update(&d);
            }
            Some(source_message::Kind::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    let took = start.elapsed();
    let summary = summary.ok_or(TransferError::NoSummary)?;
    if got != bytes || summary.bytes != bytes {
        return Err(TransferError::Length {
            what: "guest→host",
            got,
            expected: bytes,
        });
    }
    let received = hasher.finalize().to_vec();
    if summary.sha256 != received || received != pattern_digest(bytes, seed) {
        return Err(TransferError::Checksum("guest→host"));
    }
    Ok(took)
}

/// SHA-256 of the first `bytes` of the `seed` pattern, generated in [`CHUNK`]s.
fn pattern_digest(bytes: u64, seed: u64) -> Vec<u8> {
    let mut pattern = PatternStream::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        pattern.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hasher.finalize().to_vec()
}

/// MB/s (10^6 bytes a second).
pub fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

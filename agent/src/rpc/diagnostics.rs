//! Diagnostics: bulk data both ways through the agent channel, checksummed.

use cocoon_proto::agent::v1::{
    diagnostics_server::Diagnostics, source_message, DataChunk, SinkSummary, SourceMessage,
    SourceRequest,
};
use cocoon_proto::PatternStream;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Default and largest chunk of Source; multiples of 8 keep the pattern aligned.
const DEFAULT_CHUNK: u32 = 64 * 1024;
const MAX_CHUNK: u32 = 1024 * 1024;

#[derive(Debug, Default, Clone)]
pub struct DiagnosticsService;

type SourceStream = Pin<Box<dyn Stream<Item = Result<SourceMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Diagnostics for DiagnosticsService {
    async fn sink(
        &self,
        request: Request<Streaming<DataChunk>>,
    ) -> Result<Response<SinkSummary>, Status> {
        let mut stream = request.into_inner();
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            bytes += chunk.data.len() as u64;
            hasher.update(&chunk.data);
        }
        Ok(Response::new(SinkSummary {
            bytes,
            sha256: hasher.finalize().to_vec(),
        }))
    }

    type SourceStream = SourceStream;

    async fn source(
        &self,
        request: Request<SourceRequest>,
    ) -> Result<Response<Self::SourceStream>, Status> {
        let req = request.into_inner();
        let chunk = chunk_size(req.chunk_size)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut pattern = PatternStream::new(req.seed);
            let mut hasher = Sha256::new();
            let mut left = req.size;
            while left > 0 {
                let n = left.min(u64::from(chunk)) as usize;
                let mut data = vec![0u8; n];
                pattern.fill(&mut data);
                hasher.update(&data);
                left -= n as u64;
                let msg = SourceMessage {
                    kind: Some(source_message::Kind::Data(data)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return; // the host went away
                }
            }
            let summary = SinkSummary {
                bytes: req.size,
                sha256: hasher.finalize().to_vec(),
            };
            let _ = tx
                .send(Ok(SourceMessage {
                    kind: Some(source_message::Kind::Summary(summary)),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn chunk_size(requested: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(DEFAULT_CHUNK),
        n if n > MAX_CHUNK => Err(Status::invalid_argument(format!(
            "chunk_size {n} exceeds {MAX_CHUNK}"
        ))),
        n if n % 8 != 0 => Err(Status::invalid_argument(format!(
            "chunk_size {n} must be a multiple of 8"
        ))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_rules() {
        assert_eq!(chunk_size(0).unwrap(), DEFAULT_CHUNK);
        assert_eq!(chunk_size(4096).unwrap(), 4096);
        assert_eq!(
            chunk_size(7).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            chunk_size(MAX_CHUNK + 8).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}

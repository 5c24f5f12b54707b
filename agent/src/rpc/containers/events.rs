//! Events: process exits and OOM kills from now on.

use super::BoxStream;
use crate::pods::Pods;
use cocoon_proto::agent::v1::Event;
use futures::StreamExt;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

pub fn handle(pods: &Pods) -> BoxStream<Event> {
    let stream = BroadcastStream::new(pods.events.subscribe()).filter_map(|e| async move {
        match e {
            Ok(event) => Some(Ok(event)),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "event subscriber too slow");
                None
            }
        }
    });
    Box::pin(stream)
}

//! StartContainer.

use super::{Container, Status};
use crate::error::{AgentError, Result};
use crate::helper::Op;
use crate::pods::Pods;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub async fn start(pods: &Arc<Pods>, container: &Container) -> Result<()> {
    let _guard = container.lifecycle.lock().await;
    match container.status() {
        Status::Created => {}
        other => {
            return Err(AgentError::precondition(format!(
                "container {:?} is {other:?}, not Created",
                container.id
            )))
        }
    }
    pods.helpers
        .run(
            Op::Start {
                id: container.id.clone(),
            },
            None,
        )
        .await?;
    container.started.store(true, Ordering::Release);
    tracing::info!(container = %container.id, "container started");
    Ok(())
}

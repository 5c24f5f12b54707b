//! The agent's table of pods (sandboxes) and containers, and what they share: the
//! reaper, the helper launcher, the cgroup hierarchy and the event feed.

use crate::cgroups::Cgroups;
use crate::container::Container;
use crate::error::{AgentError, Result};
use crate::helper::run::Helpers;
use crate::init::reaper::Reaper;
use crate::sandbox::Sandbox;
use cocoon_proto::agent::v1::Event;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Default size of a pod's tmpfs (overlay upper layers and state).
pub const DEFAULT_SCRATCH_BYTES: u64 = 256 * 1024 * 1024;
/// Events kept for a slow subscriber before it starts missing them.
const EVENT_BACKLOG: usize = 1024;

/// Where the agent keeps things.
#[derive(Debug, Clone)]
pub struct PodsConfig {
    /// `/run/cocoon` in a guest.
    pub state_dir: PathBuf,
    /// The cgroup v2 hierarchy, if the machine has one.
    pub cgroups: Option<Cgroups>,
    /// The agent's own binary, re-executed as the helper.
    pub exe: PathBuf,
}

/// An id taken by an object still being created, or the object.
#[derive(Debug)]
enum Slot<T> {
    Creating,
    Ready(Arc<T>),
}

#[derive(Debug)]
pub struct Pods {
    pub cfg: PodsConfig,
    pub helpers: Helpers,
    pub reaper: Arc<Reaper>,
    pub events: broadcast::Sender<Event>,
    sandboxes: Mutex<HashMap<String, Slot<Sandbox>>>,
    containers: Mutex<HashMap<String, Slot<Container>>>,
    serial: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pods {
    pub fn new(cfg: PodsConfig, reaper: Arc<Reaper>) -> Self {
        let cgroup_view = cfg
            .cgroups
            .as_ref()
            .map(|c| c.root.clone())
            .filter(|root| root.as_path() != std::path::Path::new("/sys/fs/cgroup"));
        let helpers = Helpers::new(
            cfg.exe.clone(),
            cfg.state_dir.join("libcontainer"),
            cgroup_view,
            reaper.clone(),
        );
        Self {
            cfg,
            helpers,
            reaper,
            events: broadcast::channel(EVENT_BACKLOG).0,
            sandboxes: Mutex::default(),
            containers: Mutex::default(),
            serial: AtomicU64::new(0),
        }
    }

    /// A number unique in this agent's life (socket names).
    pub fn serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    pub fn cgroups(&self) -> Result<&Cgroups> {
        self.cfg
            .cgroups
            .as_ref()
            .ok_or_else(|| AgentError::precondition("this machine has no cgroup v2 hierarchy"))
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("sandboxes").join(id)
    }

    pub fn emit(&self, event: Event) {
        // No subscriber is fine: events are for whoever listens now.
        let _ = self.events.send(event);
    }

    pub fn reserve_sandbox(&self, id: &str) -> Result<()> {
        reserve(&self.sandboxes, "sandbox", id)
    }
    pub fn publish_sandbox(&self, s: Arc<Sandbox>) {
        lock(&self.sandboxes).insert(s.id.clone(), Slot::Ready(s));
    }
    pub fn forget_sandbox(&self, id: &str) {
        lock(&self.sandboxes).remove(id);
    }
    pub fn sandbox(&self, id: &str) -> Result<Arc<Sandbox>> {
        get(&self.sandboxes, "sandbox", id)
    }

    pub fn reserve_container(&self, id: &str) -> Result<()> {
        reserve(&self.containers, "container", id)
    }
    pub fn publish_container(&self, c: Arc<Container>) {
        lock(&self.containers).insert(c.id.clone(), Slot::Ready(c));
    }
    pub fn forget_container(&self, id: &str) {
        lock(&self.containers).remove(id);
    }
    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        get(&self.containers, "container", id)
    }
}

fn reserve<T>(table: &Mutex<HashMap<String, Slot<T>>>, kind: &'static str, id: &str) -> Result<()> {
    let mut t = lock(table);
    if t.contains_key(id) {
        return Err(AgentError::exists(kind, id));
    }
    t.insert(id.to_string(), Slot::Creating);
    Ok(())
}

fn get<T>(table: &Mutex<HashMap<String, Slot<T>>>, kind: &'static str, id: &str) -> Result<Arc<T>> {
    match lock(table).get(id) {
        Some(Slot::Ready(x)) => Ok(x.clone()),
        Some(Slot::Creating) => Err(AgentError::precondition(format!(
            "{kind} {id:?} is still being created"
        ))),
        None => Err(AgentError::not_found(kind, id)),
    }
}

impl Pods {
    /// Destroys every sandbox (at shutdown), so nothing outlives the agent.
    pub async fn destroy_all(self: &Arc<Self>) {
        let ids: Vec<String> = lock(&self.sandboxes).keys().cloned().collect();
        for id in ids {
            if let Err(e) = crate::sandbox::destroy(self, &id).await {
                tracing::warn!(sandbox = %id, "destroy at shutdown: {e}");
            }
        }
    }
}

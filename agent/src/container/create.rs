//! CreateContainer: check everything, then overlay, bundle, stdio and libcontainer's
//! create, undoing what was done if a step fails.

use super::process::{launch, ExitContext, LaunchError};
use super::stdio::Pending;
use super::{rootfs, spec, Container};
use crate::cgroups::{oom, stats::oom_kills};
use crate::error::{AgentError, Result};
use crate::helper::Op;
use crate::pods::Pods;
use crate::undo::Undo;
use crate::validate;
use cocoon_proto::agent::v1::{event, CreateContainerRequest, Event, OomEvent};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

pub async fn create(pods: &Arc<Pods>, req: CreateContainerRequest) -> Result<Arc<Container>> {
    let id = req.container_id.clone();
    validate::id("container_id", &id)?;
    validate::id("sandbox_id", &req.sandbox_id)?;
    let sandbox = pods.sandbox(&req.sandbox_id)?;
    let lower = validate::inside_roots("rootfs", &req.rootfs, &sandbox.roots)?;
    rootfs::check_lower(&lower)?;
    let dir = sandbox.dir.join("containers").join(&id);
    let cgroup = sandbox.cgroup.join(&id);
    let placement = spec::Placement {
        sandbox: &sandbox,
        rootfs: &dir.join("rootfs"),
        cgroup: &cgroup,
    };
    let spec = spec::prepare(&req.oci_spec_json, &req.mounts, &placement)?;
    let template = spec.process().clone().expect("checked by prepare");
    let terminal = template.terminal().unwrap_or(false);
    let cgroups = pods.cgroups()?.clone();

    pods.reserve_container(&id)?;
    let mut undo = Undo::new();
    {
        let (pods, id) = (pods.clone(), id.clone());
        undo.push("reservation", move || pods.forget_container(&id));
    }
    std::fs::create_dir(&dir).map_err(|e| AgentError::io("create container dir", e))?;
    {
        let dir = dir.clone();
        undo.push("container dir", move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
    let rootfs = rootfs::mount_overlay(&lower, &dir)?;
    {
        let rootfs = rootfs.clone();
        undo.push("overlay", move || rootfs::unmount(&rootfs));
    }
    let config =
        serde_json::to_vec_pretty(&spec).map_err(|e| AgentError::invalid("oci_spec_json", e))?;
    std::fs::write(dir.join("config.json"), config)
        .map_err(|e| AgentError::io("write config.json", e))?;

    let pending = Pending::new(pods, terminal, req.stdin, None)?;
    let op = Op::Create {
        id: id.clone(),
        bundle: dir.clone(),
        console_socket: pending.console_path(),
    };
    let cgroup_dir = cgroups.path(&cgroup);
    let oom_baseline = oom_kills(&cgroup_dir);
    let ctx = ExitContext {
        container_id: id.clone(),
        exec_id: String::new(),
        cgroup_dir: cgroup_dir.clone(),
        oom_baseline,
    };
    // On a helper failure libcontainer removes what it created (its state, the cgroup).
    let init = match launch(pods, op, pending, ctx).await {
        Ok(init) => init,
        Err(LaunchError::NotCreated(e)) => return Err(e),
        Err(LaunchError::Killed(e)) => {
            let _ = pods.helpers.run(Op::Delete { id: id.clone() }, None).await;
            return Err(e);
        }
    };
    let pid = init.pid;
    let oom_watch = {
        let (pods, id) = (pods.clone(), id.clone());
        oom::watch(&cgroup_dir, oom_baseline, move |oom_kills| {
            tracing::warn!(container = %id, oom_kills, "OOM kill");
            pods.emit(Event {
                container_id: id.clone(),
                exec_id: String::new(),
                kind: Some(event::Kind::Oom(OomEvent { oom_kills })),
            });
        })
    };
    let container = Arc::new(Container {
        id: id.clone(),
        sandbox: sandbox.clone(),
        dir,
        rootfs,
        cgroup,
        template,
        init,
        execs: Mutex::default(),
        started: AtomicBool::new(false),
        lifecycle: tokio::sync::Mutex::new(()),
        oom_watch: Mutex::new(oom_watch),
    });
    sandbox.add_container(&id);
    pods.publish_container(container.clone());
    undo.disarm();
    tracing::info!(container = %id, %pid, "container created");
    Ok(container)
}

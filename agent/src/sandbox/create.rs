//! CreateSandbox: validate everything, then build the pod step by step with undo.

use super::{settings, shared_fs, Sandbox};
use crate::error::{AgentError, Result};
use crate::helper::{Op, PauseSpec};
use crate::pods::{Pods, DEFAULT_SCRATCH_BYTES};
use crate::undo::Undo;
use crate::validate;
use cocoon_proto::agent::v1::CreateSandboxRequest;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Smallest pod tmpfs accepted.
const MIN_SCRATCH_BYTES: u64 = 1024 * 1024;

pub async fn create(pods: &Arc<Pods>, req: CreateSandboxRequest) -> Result<Arc<Sandbox>> {
    let id = req.sandbox_id.clone();
    validate::id("sandbox_id", &id)?;
    let shared = settings::shared(&req.shared_namespaces)?;
    let hostname = settings::hostname(&req.hostname)?;
    let sysctls = settings::sysctls(&req.sysctls, shared)?;
    let resolv = settings::resolv_conf(req.dns.as_ref())?;
    let cgroup = if req.cgroup_parent.is_empty() {
        PathBuf::from("cocoon").join(&id)
    } else {
        validate::relative_normal("cgroup_parent", &req.cgroup_parent)?
    };
    let shared_mounts = shared_fs::validate(&req.shared_filesystems, &pods.cfg.state_dir)?;
    let mut roots = storage_roots(&req.storage_roots, !shared_mounts.is_empty())?;
    let scratch = match req.scratch_bytes {
        0 => DEFAULT_SCRATCH_BYTES,
        n if n < MIN_SCRATCH_BYTES => {
            return Err(AgentError::invalid(
                "scratch_bytes",
                format!("less than {MIN_SCRATCH_BYTES}"),
            ))
        }
        n => n,
    };
    let cgroups = pods.cgroups()?.clone();

    pods.reserve_sandbox(&id)?;
    let mut undo = Undo::new();
    {
        let (pods, id) = (pods.clone(), id.clone());
        undo.push("reservation", move || pods.forget_sandbox(&id));
    }
    if cgroups.path(&cgroup).exists() {
        return Err(AgentError::invalid(
            "cgroup_parent",
            format!("cgroup {} is already in use", cgroup.display()),
        ));
    }

    // The host's files first: a tag the VM does not have fails before the rest is built.
    roots.extend(shared_fs::mount_all(&shared_mounts, &mut undo)?);

    let dir = pods.sandbox_dir(&id);
    std::fs::create_dir_all(&dir).map_err(|e| AgentError::io("create sandbox dir", e))?;
    {
        let dir = dir.clone();
        undo.push("sandbox dir", move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={scratch},mode=0755").as_str()),
    )
    .map_err(|e| AgentError::io("mount sandbox tmpfs", e.into()))?;
    {
        let dir = dir.clone();
        undo.push("sandbox tmpfs", move || {
            let _ = umount2(&dir, MntFlags::MNT_DETACH);
        });
    }
    std::fs::create_dir(dir.join("containers"))
        .map_err(|e| AgentError::io("create containers dir", e))?;
    if let Some(text) = &resolv {
        std::fs::write(dir.join("resolv.conf"), text)
            .map_err(|e| AgentError::io("write resolv.conf", e))?;
    }
    if let Some(name) = &hostname {
        std::fs::write(dir.join("hostname"), format!("{name}\n"))
            .map_err(|e| AgentError::io("write hostname", e))?;
    }

    let cgroup_created = cgroups.create_pod(&cgroup)?;
    {
        let (cgroups, created) = (cgroups.clone(), cgroup_created.clone());
        undo.push("pod cgroup", move || cgroups.remove_created(&created));
    }

    let pause_spec = PauseSpec {
        network: shared.network,
        ipc: shared.ipc,
        uts: shared.uts,
        pid: shared.pid,
        hostname: hostname.clone(),
        sysctls,
    };
    let outcome = pods.helpers.run(Op::Pause(pause_spec), None).await?;
    let pause = outcome.pid.ok_or_else(|| AgentError::Helper {
        op: "pause",
        message: "no pid reported".into(),
    })?;
    let pause_exit = pods.reaper.watch(pause, outcome.started);
    undo.push("pause process", move || {
        let _ = nix::sys::signal::kill(pause, nix::sys::signal::Signal::SIGKILL);
    });

    let sandbox = Arc::new(Sandbox {
        id: id.clone(),
        dir,
        cgroup,
        cgroup_created,
        roots,
        shared_mounts: shared_mounts.into_iter().map(|m| m.mount_point).collect(),
        shared,
        pause,
        pause_exit: Mutex::new(Some(pause_exit)),
        containers: Mutex::default(),
    });
    pods.publish_sandbox(sandbox.clone());
    undo.disarm();
    tracing::info!(sandbox = %id, %pause, "sandbox created");
    Ok(sandbox)
}

/// The roots given; none is fine when shared filesystems (roots themselves) are.
fn storage_roots(given: &[String], shared_fs: bool) -> Result<Vec<PathBuf>> {
    if given.is_empty() && !shared_fs {
        return Err(AgentError::invalid(
            "storage_roots",
            "at least one root (or a shared filesystem) is needed",
        ));
    }
    given
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("storage_roots[{i}]");
            let path = validate::absolute_normal(&field, r)?;
            let real = std::fs::canonicalize(&path)
                .map_err(|e| AgentError::invalid(&field, format!("{r:?}: {e}")))?;
            if !real.is_dir() {
                return Err(AgentError::invalid(
                    &field,
                    format!("{r:?} is not a directory"),
                ));
            }
            Ok(real)
        })
        .collect()
}

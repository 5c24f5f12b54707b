//! What a (re)started daemon does first: load the records, re-attach to the VMs that
//! still run, mark what was lost, and clean up what a crash left behind (image
//! references of containers that no longer exist, bind mounts and VM processes without
//! a pod).

use super::records::{ContainerState, PodState};
use super::{lock, now_ns, Container, Daemon, Pod};
use crate::agent_client::wait_ready;
use crate::cri_log::writer::LogFile;
use crate::shared_fs::PodShare;
use cocoon_hypervisor::Vm;
use cocoon_proto::AGENT_VSOCK_PORT;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A re-attached agent answers at once or not at all.
const REATTACH_READY: Duration = Duration::from_secs(10);

pub async fn recover(d: &Arc<Daemon>) {
    let mut known_containers = HashSet::new();
    let mut live_run_dirs = HashSet::new();
    let mut known_pods = HashSet::new();
    for (rec, containers) in d.records.load_all() {
        known_pods.insert(rec.id.clone());
        let pod = Arc::new(Pod {
            id: rec.id.clone(),
            share: PodShare::new(&d.config.raw.state_dir, &rec.id),
            record: Mutex::new(rec.clone()),
            op: tokio::sync::Mutex::new(()),
            vm: Mutex::new(None),
            agent: Mutex::new(None),
        });
        let mut alive = false;
        if let Some(vm_rec) = &rec.vm {
            match Vm::reattach(vm_rec).await {
                Ok(vm) => match wait_ready(&vm, AGENT_VSOCK_PORT, REATTACH_READY).await {
                    Ok((client, _)) => {
                        live_run_dirs.insert(vm.run_dir().to_path_buf());
                        let vm = Arc::new(vm);
                        *lock(&pod.vm) = Some(vm.clone());
                        *lock(&pod.agent) = Some(client);
                        d.watch_vm(pod.clone(), vm);
                        alive = true;
                        tracing::info!(pod = %rec.id, "re-attached to the pod's VM");
                    }
                    Err(e) => {
                        tracing::warn!(pod = %rec.id, error = %e, "the re-attached VM's agent does not answer; stopping it");
                        vm.kill().await;
                    }
                },
                Err(e) => tracing::warn!(pod = %rec.id, error = %e, "the pod's VM is gone"),
            }
        }
        if !alive && (rec.state == PodState::Ready || rec.vm.is_some()) {
            let _ = d.save_pod(&pod, |r| {
                r.state = PodState::NotReady;
                r.vm = None;
                r.message = "the pod's VM was gone when cocoond restarted".into();
            });
        }
        lock(&d.pods).insert(rec.id.clone(), pod.clone());
        for c in containers {
            known_containers.insert(c.id.clone());
            let container = Arc::new(Container::new(c.clone()));
            lock(&d.containers).insert(c.id.clone(), container.clone());
            let live = matches!(c.state, ContainerState::Running | ContainerState::Created);
            if live && !alive {
                let _ = d.save_container(&container, |r| {
                    r.state = ContainerState::Exited;
                    r.finished_at_ns = now_ns();
                    r.exit_code = 255;
                    r.reason = "Unknown".into();
                    r.message = "the pod's VM ended while cocoond was down".into();
                });
                let _ = container.exited.send(true);
                let _ = pod.share.release_container(&c.id);
            } else if c.state == ContainerState::Running {
                if !c.log_path.as_os_str().is_empty() {
                    match LogFile::open(&c.log_path) {
                        Ok(l) => *lock(&container.log) = Some(Arc::new(l)),
                        Err(e) => {
                            tracing::warn!(container = %c.id, error = %e, "cannot reopen the log")
                        }
                    }
                }
                if let Some(client) = pod.agent() {
                    d.monitor(container, client);
                }
            }
        }
    }
    for user in d.images.users() {
        if !known_containers.contains(&user) {
            tracing::info!(container = %user, "releasing an image reference of a container that no longer exists");
            d.images.release(&user);
        }
    }
    clean_orphans(&d.config.raw.state_dir, &known_pods, &live_run_dirs);
}

/// Shared dirs of pods without a record, and VM run dirs (with their processes) that
/// belong to no re-attached VM.
fn clean_orphans(state_dir: &Path, pods: &HashSet<String>, live_run_dirs: &HashSet<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !pods.contains(&id) {
                tracing::info!(pod = %id, "removing the shared directory of an unknown pod");
                let _ = PodShare::new(state_dir, &id).destroy();
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(state_dir.join("vm")) {
        for e in entries.flatten() {
            let dir = e.path();
            if live_run_dirs.contains(&dir) {
                continue;
            }
            for (pid, _) in crate::procs::processes_mentioning(&dir) {
                tracing::warn!(pid, dir = %dir.display(), "killing a VM process no pod owns");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

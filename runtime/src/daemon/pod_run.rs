//! RunPodSandbox: validate, size and boot the pod's VM, set the pod up in the guest.

use super::error::{agent, invalid, DaemonError, Result};
use super::records::{PodRecord, PodState, StartupTimings};
use super::sizing::{vm_size, VmSize};
use super::{ids, lock, now_ns, Daemon, Pod};
use crate::pod_vm::PodVm;
use crate::shared_fs::{PodShare, GUEST_MOUNT, TAG};
use cocoon_proto::agent::v1::{CreateSandboxRequest, DnsConfig, Namespace, SharedFs};
use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use std::sync::{Arc, Mutex};

impl Daemon {
    pub async fn run_pod(
        self: &Arc<Self>,
        config: Option<PodSandboxConfig>,
        handler: &str,
    ) -> Result<String> {
        let config = config.ok_or_else(|| invalid("config", "is missing"))?;
        validate(&config)?;
        let profile = self.config.profile(handler).ok_or_else(|| {
            invalid(
                "runtime_handler",
                format!(
                    "no handler {handler:?}; configured: {}",
                    self.config.handler_names().join(", ")
                ),
            )
        })?;
        let meta = config.metadata.clone().unwrap_or_default();
        if let Some(other) = self.pods_snapshot().into_iter().find(|p| {
            let r = p.record();
            r.config.metadata.as_ref().is_some_and(|m| {
                m.name == meta.name
                    && m.namespace == meta.namespace
                    && m.uid == meta.uid
                    && m.attempt == meta.attempt
            })
        }) {
            return Err(DaemonError::AlreadyExists(format!(
                "pod sandbox {}/{} (uid {}, attempt {}) exists already as {}",
                meta.namespace, meta.name, meta.uid, meta.attempt, other.id
            )));
        }
        let t = &profile.template;
        let host_cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let size = vm_size(
            &config,
            VmSize {
                vcpus: t.vcpus,
                memory_mib: t.memory_mib,
            },
            self.config.raw.pod.memory_overhead_mib,
            host_cpus,
        )?;

        let id = ids::new_id();
        let share = PodShare::new(&self.config.raw.state_dir, &id);
        let record = PodRecord {
            id: id.clone(),
            config: config.clone(),
            runtime_handler: handler.to_string(),
            created_at_ns: now_ns(),
            state: PodState::NotReady,
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            vm: None,
            message: "starting".into(),
            startup_ms: None,
        };
        let pod = Arc::new(Pod {
            id: id.clone(),
            share,
            record: Mutex::new(record.clone()),
            op: tokio::sync::Mutex::new(()),
            vm: Mutex::new(None),
            agent: Mutex::new(None),
        });
        let _op = pod.op.lock().await;
        // The record first, so that a daemon crash mid-boot leaves something to clean up.
        self.records.save_pod(&record)?;
        lock(&self.pods).insert(id.clone(), pod.clone());
        match self.boot(&pod, profile, size, &config).await {
            Ok(()) => Ok(id),
            Err(e) => {
                tracing::warn!(pod = %id, error = %e, "RunPodSandbox failed; cleaning up");
                self.teardown_vm(&pod).await;
                let _ = pod.share.destroy();
                let _ = self.records.remove_pod(&id);
                lock(&self.pods).remove(&id);
                Err(e)
            }
        }
    }

    async fn boot(
        self: &Arc<Self>,
        pod: &Arc<Pod>,
        profile: &crate::config::ResolvedProfile,
        size: VmSize,
        config: &PodSandboxConfig,
    ) -> Result<()> {
        pod.share
            .create()
            .map_err(|e| DaemonError::Internal(e.to_string()))?;
        let run_dir = self.config.raw.state_dir.join("vm").join(&pod.id[..12]);
        let mut vm_config = profile.template.clone();
        vm_config.run_dir = run_dir;
        vm_config.vcpus = size.vcpus;
        vm_config.memory_mib = size.memory_mib;
        vm_config.shared_fs = Some(cocoon_hypervisor::SharedFsConfig {
            host_dir: pod.share.host_dir().to_path_buf(),
            tag: TAG.into(),
        });
        let valid = vm_config
            .validate()
            .map_err(|e| DaemonError::Vm(e.to_string()))?;
        let started = std::time::Instant::now();
        let (pod_vm, _details, timings) = PodVm::boot(&valid, self.config.raw.pod.ready_timeout())
            .await
            .map_err(|e| DaemonError::Vm(format!("{e:#}")))?;
        tracing::info!(pod = %pod.id, total = ?timings.total, kernel = ?timings.kernel_boot, "pod VM ready");
        let PodVm { vm, agent: client } = pod_vm;
        let vm = Arc::new(vm);
        *lock(&pod.vm) = Some(vm.clone());
        *lock(&pod.agent) = Some(client.clone());
        self.watch_vm(pod.clone(), vm.clone());
        self.save_pod(pod, |r| r.vm = Some(vm.record()))?;

        let mut c = client.containers.clone();
        let asked = std::time::Instant::now();
        c.create_sandbox(sandbox_request(&pod.id, config))
            .await
            .map_err(agent("CreateSandbox"))?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let startup = StartupTimings {
            vmm_start: ms(timings.vmm_start),
            kernel_boot: ms(timings.kernel_boot),
            agent_init: ms(timings.agent_init),
            handshake: ms(timings.handshake),
            create_sandbox: ms(asked.elapsed()),
            total: ms(started.elapsed()),
        };
        self.save_pod(pod, |r| {
            r.state = PodState::Ready;
            r.message.clear();
            r.startup_ms = Some(startup);
        })?;
        Ok(())
    }
}

fn sandbox_request(id: &str, config: &PodSandboxConfig) -> CreateSandboxRequest {
    let linux = config.linux.clone().unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mut shared = vec![
        Namespace::Network as i32,
        Namespace::Ipc as i32,
        Namespace::Uts as i32,
    ];
    if ns.pid == NamespaceMode::Pod as i32 {
        shared.push(Namespace::Pid as i32);
    }
    let dns = config.dns_config.clone().map(|d| DnsConfig {
        servers: d.servers,
        searches: d.searches,
        options: d.options,
    });
    CreateSandboxRequest {
        sandbox_id: id.to_string(),
        hostname: config.hostname.clone(),
        dns,
        sysctls: linux.sysctls.into_iter().collect(),
        cgroup_parent: String::new(),
        shared_namespaces: shared,
        storage_roots: vec![],
        scratch_bytes: 0,
        shared_filesystems: vec![SharedFs {
            tag: TAG.into(),
            mount_point: GUEST_MOUNT.into(),
        }],
    }
}

/// Checks what RunPodSandbox needs and what a VM can give.
fn validate(config: &PodSandboxConfig) -> Result<()> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("config.metadata", "is missing"))?;
    for (f, v) in [
        ("name", &meta.name),
        ("namespace", &meta.namespace),
        ("uid", &meta.uid),
    ] {
        if v.is_empty() {
            return Err(invalid(format!("config.metadata.{f}"), "is empty"));
        }
        if v.len() > 253 || v.contains(['/', '\0']) {
            return Err(invalid(
                format!("config.metadata.{f}"),
                format!("{v:?} is not a valid name"),
            ));
        }
    }
    if !config.hostname.is_empty()
        && (config.hostname.len() > 64
            || !config
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(invalid(
            "config.hostname",
            format!("{:?} is not a hostname", config.hostname),
        ));
    }
    if !config.log_directory.is_empty() && !config.log_directory.starts_with('/') {
        return Err(invalid(
            "config.log_directory",
            format!("{:?} is not absolute", config.log_directory),
        ));
    }
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    if let Some(ns) = ns {
        for (f, mode) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
            if mode == NamespaceMode::Node as i32 {
                return Err(invalid(
                    format!("config.linux.security_context.namespace_options.{f}"),
                    format!("the pod asks for the host's {f} namespace; a pod in a VM cannot share the host's namespaces (run it with a non-VM RuntimeClass)"),
                ));
            }
            if mode == NamespaceMode::Target as i32 {
                return Err(invalid(
                    format!("config.linux.security_context.namespace_options.{f}"),
                    "TARGET namespaces are not supported",
                ));
            }
        }
    }
    if config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged)
    {
        tracing::info!("privileged pod: privileged inside its VM only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption, PodSandboxMetadata,
    };

    fn good() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "p".into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&good()).is_ok());
        let mut c = good();
        c.metadata = None;
        assert!(validate(&c)
            .unwrap_err()
            .to_string()
            .contains("config.metadata"));
        let mut c = good();
        c.metadata.as_mut().unwrap().name.clear();
        assert!(validate(&c)
            .unwrap_err()
            .to_string()
            .contains("config.metadata.name"));
        let mut c = good();
        c.hostname = "bad host".into();
        assert!(validate(&c)
            .unwrap_err()
            .to_string()
            .contains("config.hostname"));
        let mut c = good();
        c.log_directory = "rel".into();
        assert!(validate(&c)
            .unwrap_err()
            .to_string()
            .contains("config.log_directory"));
    }

    #[test]
    fn host_namespaces_are_refused() {
        let mut c = good();
        c.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = validate(&c).unwrap_err().to_string();
        assert!(
            e.contains("namespace_options.network") && e.contains("host's network"),
            "{e}"
        );
    }

    #[test]
    fn pid_sharing_follows_namespace_options() {
        let mut c = good();
        let r = sandbox_request("x", &c);
        assert!(
            r.shared_namespaces.contains(&(Namespace::Pid as i32)),
            "POD is the default mode"
        );
        c.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(!sandbox_request("x", &c)
            .shared_namespaces
            .contains(&(Namespace::Pid as i32)));
    }
}

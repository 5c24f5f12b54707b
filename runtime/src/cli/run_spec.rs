//! The CRI configs `cocoon run` sends: built from its options, without talking to anyone.

use super::parse::{Cpus, Volume};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// The namespace `cocoon run` puts its pods in.
pub const NAMESPACE: &str = "default";

/// Where pod logs go: `<LOG_ROOT>/<namespace>_<name>_<uid>`, as kubelet lays them out.
pub const LOG_ROOT: &str = "/var/log/cocoon/pods";

/// Marks pods `cocoon run` made, which `cocoon rm` removes with their last container.
pub const CREATED_BY_LABEL: &str = "io.cocoon.created-by";
pub const CREATED_BY_RUN: &str = "cocoon-run";

/// What one `cocoon run` asks for.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The pod's and the container's name.
    pub name: String,
    pub uid: String,
    pub image: String,
    /// Replaces the image's entrypoint and command when not empty.
    pub command: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<Cpus>,
}

impl RunSpec {
    pub fn log_directory(&self) -> String {
        format!("{LOG_ROOT}/{NAMESPACE}_{}_{}", self.name, self.uid)
    }

    /// Limits for both the pod and its container; none when nothing was asked.
    pub fn resources(&self) -> Option<LinuxContainerResources> {
        if self.memory_bytes.is_none() && self.cpus.is_none() {
            return None;
        }
        let mut resources = LinuxContainerResources::default();
        if let Some(bytes) = self.memory_bytes {
            resources.memory_limit_in_bytes = bytes;
        }
        if let Some(cpus) = self.cpus {
            resources.cpu_quota = cpus.quota_us();
            resources.cpu_period = cpus.period_us();
        }
        Some(resources)
    }

    pub fn pod_config(&self) -> PodSandboxConfig {
        let pod = NamespaceMode::Pod as i32;
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: self.log_directory(),
            labels: HashMap::from([(CREATED_BY_LABEL.into(), CREATED_BY_RUN.into())]),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: pod,
                        pid: pod,
                        ipc: pod,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: self.resources(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn container_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                user_specified_image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            envs: self
                .envs
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: self
                .volumes
                .iter()
                .map(|v| Mount {
                    container_path: v.container.to_string_lossy().into_owned(),
                    host_path: v.host.to_string_lossy().into_owned(),
                    readonly: v.readonly,
                    ..Default::default()
                })
                .collect(),
            log_path: format!("{}.log", self.name),
            linux: Some(LinuxContainerConfig {
                resources: self.resources(),
                security_context: None,
            }),
            ..Default::default()
        }
    }
}

/// 32 random hex digits: a pod uid.
pub fn random_uid() -> String {
    // std's hasher keys come from the operating system's random source.
    let mut uid = String::with_capacity(32);
    for salt in 0..2u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u32(std::process::id());
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(now.as_nanos());
        }
        uid.push_str(&format!("{:016x}", hasher.finish()));
    }
    uid
}

/// A name from the image's and the uid's: `busybox-3f2a9c` for `docker.io/library/busybox:1`.
pub fn default_name(image: &str, uid: &str) -> String {
    let repository = image.split('@').next().unwrap_or(image);
    let last = repository.rsplit('/').next().unwrap_or(repository);
    let base = last.split(':').next().unwrap_or(last);
    let mut name: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(40)
        .collect();
    name = name.trim_matches('-').to_string();
    if name.is_empty() {
        name = "pod".into();
    }
    format!("{name}-{}", &uid[..uid.len().min(6)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            name: "web".into(),
            uid: "0123456789abcdef".into(),
            image: "busybox:1.36".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            envs: vec![("A".into(), "b".into())],
            volumes: vec![Volume {
                host: "/data".into(),
                container: "/mnt".into(),
                readonly: true,
            }],
            memory_bytes: Some(256 << 20),
            cpus: Some(Cpus { millis: 1500 }),
        }
    }

    #[test]
    fn the_pod_is_named_logged_and_limited() {
        let pod = spec().pod_config();
        let meta = pod.metadata.unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str(), meta.attempt),
            ("web", "default", 0)
        );
        assert_eq!(pod.hostname, "web");
        assert_eq!(
            pod.log_directory,
            "/var/log/cocoon/pods/default_web_0123456789abcdef"
        );
        let linux = pod.linux.unwrap();
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!([ns.network, ns.pid, ns.ipc], [NamespaceMode::Pod as i32; 3]);
        let res = linux.resources.unwrap();
        assert_eq!(res.memory_limit_in_bytes, 256 << 20);
        assert_eq!((res.cpu_quota, res.cpu_period), (150_000, 100_000));
        assert_eq!(pod.labels[CREATED_BY_LABEL], CREATED_BY_RUN);
    }

    #[test]
    fn the_container_gets_command_env_mounts_and_log() {
        let c = spec().container_config();
        assert_eq!(c.metadata.unwrap().name, "web");
        assert_eq!(c.image.unwrap().image, "busybox:1.36");
        assert_eq!(c.command, ["sh", "-c", "echo hi"]);
        assert!(c.args.is_empty());
        assert_eq!(
            (c.envs[0].key.as_str(), c.envs[0].value.as_str()),
            ("A", "b")
        );
        let m = &c.mounts[0];
        assert_eq!(
            (m.host_path.as_str(), m.container_path.as_str(), m.readonly),
            ("/data", "/mnt", true)
        );
        assert_eq!(c.log_path, "web.log");
        assert!(c.linux.unwrap().resources.is_some());
    }

    #[test]
    fn no_limits_means_no_resources() {
        let mut s = spec();
        s.memory_bytes = None;
        s.cpus = None;
        assert!(s.resources().is_none());
        assert!(s.pod_config().linux.unwrap().resources.is_none());
    }

    #[test]
    fn uids_are_random_hex() {
        let (a, b) = (random_uid(), random_uid());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn default_names_come_from_the_image() {
        let uid = "abcdef123456";
        assert_eq!(
            default_name("docker.io/library/busybox:1.36", uid),
            "busybox-abcdef"
        );
        assert_eq!(
            default_name("localhost:5000/My_App@sha256:00", uid),
            "my-app-abcdef"
        );
        assert_eq!(default_name("___", uid), "pod-abcdef");
        for image in ["busybox", "a/b:c", "x@sha256:1"] {
            assert!(super::super::parse::name(&default_name(image, uid)).is_ok());
        }
    }
}

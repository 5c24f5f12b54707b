//! The OCI runtime spec of a CRI container: the image's defaults, the CRI config over
//! them (kubelet's rules: `command` replaces the entrypoint, `args` the cmd), the pod's
//! namespaces and the container's cgroup limits. The agent fills in root.path,
//! cgroupsPath and the shared namespaces' paths.

use super::error::{invalid, Result};
use k8s_cri::v1::{ContainerConfig, LinuxContainerResources, MountPropagation, PodSandboxConfig};
use serde_json::{json, Value};
use std::path::Path;

/// What the image says about how to run it.
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

/// A CRI mount as it reaches the guest.
#[derive(Debug, Clone)]
pub struct GuestMount {
    pub destination: String,
    pub source: String,
    pub readonly: bool,
    pub propagation: MountPropagation,
}

/// The capabilities a container gets by default (the set containerd and CRI-O give).
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability of our guest kernel (6.1), for privileged containers and "ALL".
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The process args by kubelet's rules.
pub fn process_args(c: &ContainerConfig, image: &ImageDefaults) -> Result<Vec<String>> {
    let args = if !c.command.is_empty() {
        c.command
            .iter()
            .chain(c.args.iter())
            .cloned()
            .collect::<Vec<_>>()
    } else if !c.args.is_empty() {
        image
            .entrypoint
            .iter()
            .chain(c.args.iter())
            .cloned()
            .collect()
    } else {
        image
            .entrypoint
            .iter()
            .chain(image.cmd.iter())
            .cloned()
            .collect()
    };
    if args.is_empty() {
        return Err(invalid(
            "config.command",
            "neither the container config nor the image gives a command to run",
        ));
    }
    Ok(args)
}

/// The environment: the image's, then the config's (which wins per name).
pub fn process_env(c: &ContainerConfig, image: &ImageDefaults) -> Result<Vec<String>> {
    fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(&mut env, k, v);
    }
    for (i, kv) in c.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(invalid(
                format!("config.envs[{i}].key"),
                format!("{:?} is not a variable name", kv.key),
            ));
        }
        set(&mut env, &kv.key, &kv.value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(
            &mut env,
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// uid, gid and extra groups: the security context first, then the image's user,
/// names looked up in the image's own /etc/passwd and /etc/group.
pub fn process_user(
    c: &ContainerConfig,
    image: &ImageDefaults,
    rootfs: &Path,
) -> Result<(u32, u32, Vec<u32>)> {
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let extra: Vec<u32> = sc
        .map(|s| {
            s.supplemental_groups
                .iter()
                .filter_map(|g| u32::try_from(*g).ok())
                .collect()
        })
        .unwrap_or_default();
    let field_uid =
        |v: i64, f: &str| u32::try_from(v).map_err(|_| invalid(f, format!("{v} is not a uid/gid")));
    let explicit_gid = match sc.and_then(|s| s.run_as_group.as_ref()) {
        Some(g) => Some(field_uid(
            g.value,
            "config.linux.security_context.run_as_group",
        )?),
        None => None,
    };
    let (uid, gid) = if let Some(u) = sc.and_then(|s| s.run_as_user.as_ref()) {
        let uid = field_uid(u.value, "config.linux.security_context.run_as_user")?;
        let gid = passwd_by_uid(rootfs, uid).unwrap_or(0);
        (uid, gid)
    } else if let Some(name) = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|n| !n.is_empty())
    {
        passwd_by_name(rootfs, name).ok_or_else(|| {
            invalid(
                "config.linux.security_context.run_as_username",
                format!("no user {name:?} in the image's /etc/passwd"),
            )
        })?
    } else {
        image_user(&image.user, rootfs)?
    };
    Ok((uid, explicit_gid.unwrap_or(gid), extra))
}

fn image_user(user: &str, rootfs: &Path) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, pgid) = match u.parse::<u32>() {
        Ok(uid) => (uid, passwd_by_uid(rootfs, uid).unwrap_or(0)),
        Err(_) => passwd_by_name(rootfs, u).ok_or_else(|| {
            invalid(
                "image.config.User",
                format!("no user {u:?} in the image's /etc/passwd"),
            )
        })?,
    };
    let gid = match g {
        None => pgid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_by_name(rootfs, g).ok_or_else(|| {
                invalid(
                    "image.config.User",
                    format!("no group {g:?} in the image's /etc/group"),
                )
            })?,
        },
    };
    Ok((uid, gid))
}

/// Reads at most 1 MiB of a file of the image: its content is the image author's.
fn image_file(rootfs: &Path, rel: &str) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(rootfs.join(rel)) {
        let _ = f.take(1 << 20).read_to_string(&mut s);
    }
    s
}

fn passwd_entries(rootfs: &Path) -> Vec<(String, u32, u32)> {
    image_file(rootfs, "etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

fn passwd_by_name(rootfs: &Path, name: &str) -> Option<(u32, u32)> {
    passwd_entries(rootfs)
        .into_iter()
        .find(|e| e.0 == name)
        .map(|e| (e.1, e.2))
}

fn passwd_by_uid(rootfs: &Path, uid: u32) -> Option<u32> {
    passwd_entries(rootfs)
        .into_iter()
        .find(|e| e.1 == uid)
        .map(|e| e.2)
}

fn group_by_name(rootfs: &Path, name: &str) -> Option<u32> {
    image_file(rootfs, "etc/group").lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| f.get(2)?.parse().ok())
            .flatten()
    })
}

fn capabilities(c: &ContainerConfig) -> Result<Vec<String>> {
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    if sc.is_some_and(|s| s.privileged) {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let Some(cc) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(caps);
    };
    let norm = |field: String, c: &str| -> Result<Vec<String>> {
        let up = c.to_ascii_uppercase();
        if up == "ALL" {
            return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
        }
        let name = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if !ALL_CAPS.contains(&name.as_str()) {
            return Err(invalid(field, format!("unknown capability {c:?}")));
        }
        Ok(vec![name])
    };
    for (i, d) in cc.drop_capabilities.iter().enumerate() {
        let drop = norm(
            format!("config.linux.security_context.capabilities.drop_capabilities[{i}]"),
            d,
        )?;
        caps.retain(|c| !drop.contains(c));
    }
    for (i, a) in cc.add_capabilities.iter().enumerate() {
        for n in norm(
            format!("config.linux.security_context.capabilities.add_capabilities[{i}]"),
            a,
        )? {
            if !caps.contains(&n) {
                caps.push(n);
            }
        }
    }
    Ok(caps)
}

/// OCI `linux.resources` of CRI resources.
pub fn resources(r: Option<&LinuxContainerResources>) -> Result<Value> {
    let Some(r) = r else { return Ok(json!({})) };
    let mut v = json!({});
    let neg = |f: &str, x: i64| {
        if x < 0 {
            Err(invalid(
                format!("linux.resources.{f}"),
                format!("{x} is negative"),
            ))
        } else {
            Ok(x)
        }
    };
    if neg("memory_limit_in_bytes", r.memory_limit_in_bytes)? > 0 {
        v["memory"]["limit"] = json!(r.memory_limit_in_bytes);
        if r.memory_swap_limit_in_bytes > 0 {
            v["memory"]["swap"] = json!(r.memory_swap_limit_in_bytes);
        }
    }
    if neg("cpu_shares", r.cpu_shares)? > 0 {
        v["cpu"]["shares"] = json!(r.cpu_shares);
    }
    if neg("cpu_quota", r.cpu_quota)? > 0 {
        v["cpu"]["quota"] = json!(r.cpu_quota);
    }
    if neg("cpu_period", r.cpu_period)? > 0 {
        v["cpu"]["period"] = json!(r.cpu_period);
    }
    if !r.cpuset_cpus.is_empty() {
        v["cpu"]["cpus"] = json!(r.cpuset_cpus);
    }
    if !r.cpuset_mems.is_empty() {
        v["cpu"]["mems"] = json!(r.cpuset_mems);
    }
    if !r.unified.is_empty() {
        v["unified"] = json!(r.unified);
    }
    Ok(v)
}

/// The whole spec.
pub fn container_spec(
    c: &ContainerConfig,
    pod: &PodSandboxConfig,
    image: &ImageDefaults,
    image_rootfs: &Path,
    mounts: &[GuestMount],
) -> Result<String> {
    let args = process_args(c, image)?;
    let env = process_env(c, image)?;
    let (uid, gid, extra) = process_user(c, image, image_rootfs)?;
    let caps = capabilities(c)?;
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".into()
    };
    if !cwd.starts_with('/') {
        return Err(invalid(
            "config.working_dir",
            format!("{cwd:?} is not absolute"),
        ));
    }
    let mut all_mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in mounts {
        let propagation = match m.propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
        };
        all_mounts.retain(|x| x["destination"] != m.destination.as_str());
        all_mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", if m.readonly { "ro" } else { "rw" }, propagation],
        }));
    }
    let ns = |t: &str| json!({ "type": t });
    let privileged = sc.is_some_and(|s| s.privileged);
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": c.tty,
            "user": { "uid": uid, "gid": gid, "additionalGids": extra },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": sc.is_some_and(|s| s.no_new_privs),
            "oomScoreAdj": c.linux.as_ref().and_then(|l| l.resources.as_ref()).map(|r| r.oom_score_adj).unwrap_or(0),
        },
        "root": { "path": "rootfs", "readonly": sc.is_some_and(|s| s.readonly_rootfs) },
        "hostname": pod.hostname,
        "mounts": all_mounts,
        "linux": {
            "namespaces": [ns("pid"), ns("network"), ns("ipc"), ns("uts"), ns("mount"), ns("cgroup")],
            "resources": resources(c.linux.as_ref().and_then(|l| l.resources.as_ref()))?,
            "maskedPaths": if privileged { vec![] } else { MASKED_PATHS.to_vec() },
            "readonlyPaths": if privileged { vec![] } else { READONLY_PATHS.to_vec() },
        }
    });
    Ok(spec.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        Capability, Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
    };

    fn image() -> ImageDefaults {
        ImageDefaults {
            user: String::new(),
            env: vec!["PATH=/bin".into(), "A=image".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            working_dir: "/work".into(),
        }
    }

    #[test]
    fn kubelet_command_rules() {
        let mut c = ContainerConfig::default();
        assert_eq!(process_args(&c, &image()).unwrap(), ["/entry", "default"]);
        c.args = vec!["x".into()];
        assert_eq!(process_args(&c, &image()).unwrap(), ["/entry", "x"]);
        c.command = vec!["/bin/sh".into()];
        assert_eq!(process_args(&c, &image()).unwrap(), ["/bin/sh", "x"]);
        let e = process_args(&ContainerConfig::default(), &ImageDefaults::default()).unwrap_err();
        assert!(e.to_string().contains("config.command"), "{e}");
    }

    #[test]
    fn config_env_wins_and_bad_names_are_refused() {
        let mut c = ContainerConfig {
            envs: vec![KeyValue {
                key: "A".into(),
                value: "cfg".into(),
            }],
            ..Default::default()
        };
        assert_eq!(process_env(&c, &image()).unwrap(), ["PATH=/bin", "A=cfg"]);
        c.envs.push(KeyValue {
            key: "B=C".into(),
            value: String::new(),
        });
        assert!(process_env(&c, &image())
            .unwrap_err()
            .to_string()
            .contains("config.envs[1].key"));
    }

    #[test]
    fn users_from_context_or_image_passwd() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::fs::write(
            tmp.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let mut img = image();
        img.user = "app".into();
        let c = ContainerConfig::default();
        assert_eq!(
            process_user(&c, &img, tmp.path()).unwrap(),
            (1000, 1001, vec![])
        );
        img.user = "app:staff".into();
        assert_eq!(
            process_user(&c, &img, tmp.path()).unwrap(),
            (1000, 50, vec![])
        );
        img.user = "ghost".into();
        assert!(process_user(&c, &img, tmp.path())
            .unwrap_err()
            .to_string()
            .contains("ghost"));
        let c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_user: Some(Int64Value { value: 7 }),
                    run_as_group: Some(Int64Value { value: 8 }),
                    supplemental_groups: vec![9],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(process_user(&c, &img, tmp.path()).unwrap(), (7, 8, vec![9]));
    }

    #[test]
    fn capabilities_add_drop_and_unknown() {
        let mut c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: vec!["sys_admin".into()],
                        drop_capabilities: vec!["CAP_KILL".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let caps = capabilities(&c).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        c.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .capabilities
            .as_mut()
            .unwrap()
            .add_capabilities = vec!["CAP_NOPE".into()];
        assert!(capabilities(&c)
            .unwrap_err()
            .to_string()
            .contains("add_capabilities[0]"));
    }

    #[test]
    fn spec_carries_mounts_and_limits() {
        let mut c = ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_quota: 50_000,
                    cpu_period: 100_000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = GuestMount {
            destination: "/data".into(),
            source: "/run/cocoon/shared/c/mounts/0".into(),
            readonly: true,
            propagation: MountPropagation::PropagationPrivate,
        };
        let s: Value = serde_json::from_str(
            &container_spec(
                &c,
                &PodSandboxConfig::default(),
                &image(),
                Path::new("/nonexistent"),
                &[m],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["process"]["cwd"], "/work");
        let data = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(data["options"][1], "ro");
        c.linux
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .cpu_shares = -1;
        let e = container_spec(
            &c,
            &PodSandboxConfig::default(),
            &image(),
            Path::new("/"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("cpu_shares"), "{e}");
    }
}

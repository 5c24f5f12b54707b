//! OCI runtime specs the runtime hands the agent.

use serde_json::{json, Value};

/// The read-only busybox rootfs every guest image carries (the built-in test image), and
/// the storage root a pod must be given to use it.
pub const TEST_ROOTFS: &str = "/usr/share/cocoon/test-rootfs";
pub const TEST_STORAGE: &str = "/usr/share/cocoon";

/// A minimal Linux spec: `args` as root in fresh pid/net/ipc/uts/mount/cgroup namespaces
/// (the agent joins the pod's shared ones), the usual API filesystems, `resources` as
/// OCI `LinuxResources` (`{}` for none).
pub fn basic_spec(args: &[String], terminal: bool, resources: Value) -> String {
    let ns = |t: &str| json!({ "type": t });
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["ro", "nosuid", "noexec", "nodev"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["ro", "nosuid", "noexec", "nodev"] }
        ],
        "linux": {
            "namespaces": [ns("pid"), ns("network"), ns("ipc"), ns("uts"), ns("mount"), ns("cgroup")],
            "resources": resources
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_escaped_and_resources_kept() {
        let args = vec!["sh".to_string(), "-c".into(), r#"echo "$x" \ ok"#.into()];
        let spec: Value =
            serde_json::from_str(&basic_spec(&args, true, json!({"memory": {"limit": 1}})))
                .unwrap();
        assert_eq!(spec["process"]["args"][2], r#"echo "$x" \ ok"#);
        assert_eq!(spec["process"]["terminal"], true);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 1);
    }
}

//! The host's OCI runtime spec, checked and adapted to the guest: the agent's rootfs
//! overlay, its cgroup path, the pod's shared namespaces, mounts from allowed places.

use super::mounts;
use crate::error::{AgentError, Result};
use crate::sandbox::Sandbox;
use crate::validate;
use cocoon_proto::agent::v1::Mount as ProtoMount;
use oci_spec::runtime::{
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, Process, Root,
    Spec,
};
use std::path::{Path, PathBuf};

const SPEC_FIELD: &str = "oci_spec_json";

/// Where the spec's paths point in the guest.
pub struct Placement<'a> {
    pub sandbox: &'a Sandbox,
    /// The overlay mount point (not created yet when the spec is checked).
    pub rootfs: &'a Path,
    /// The container cgroup, relative to the hierarchy's root.
    pub cgroup: &'a Path,
}

/// Parses and adapts the spec; touches nothing on disk but reads (symlink resolution).
pub fn prepare(json: &str, extra: &[ProtoMount], at: &Placement<'_>) -> Result<Spec> {
    let mut spec: Spec =
        serde_json::from_str(json).map_err(|e| AgentError::invalid(SPEC_FIELD, e))?;
    if !spec.version().starts_with("1.") {
        return Err(AgentError::invalid(
            format!("{SPEC_FIELD}.ociVersion"),
            format!("{:?} is not 1.x", spec.version()),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| AgentError::invalid(format!("{SPEC_FIELD}.process"), "missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(AgentError::invalid(
            format!("{SPEC_FIELD}.process.args"),
            "empty",
        ));
    }
    validate::absolute_normal(
        &format!("{SPEC_FIELD}.process.cwd"),
        &process.cwd().to_string_lossy(),
    )?;

    let readonly = spec.root().as_ref().and_then(|r| r.readonly());
    let mut root = Root::default();
    root.set_path(at.rootfs.to_path_buf());
    root.set_readonly(readonly);
    spec.set_root(Some(root));

    if spec.hooks().is_some() {
        // Hooks name host binaries, which do not exist in the guest.
        tracing::warn!("ignoring the spec's hooks");
        spec.set_hooks(None);
    }

    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(Path::new("/").join(at.cgroup)));
    linux.set_namespaces(Some(namespaces(linux.namespaces().as_deref(), at.sandbox)));
    spec.set_linux(Some(linux));

    spec.set_mounts(Some(all_mounts(&spec, extra, at.sandbox)?));
    Ok(spec)
}

/// The spec's namespaces with the pod's shared ones joined by path, and a new mount,
/// PID, network, IPC and UTS namespace wherever the spec would leave the container in
/// the agent's.
fn namespaces(given: Option<&[LinuxNamespace]>, sandbox: &Sandbox) -> Vec<LinuxNamespace> {
    use LinuxNamespaceType as T;
    let s = sandbox.shared;
    let shared = [
        (T::Network, s.network, "net"),
        (T::Ipc, s.ipc, "ipc"),
        (T::Uts, s.uts, "uts"),
        (T::Pid, s.pid, "pid"),
    ];
    let is_shared = |t: T| shared.iter().any(|(st, on, _)| *st == t && *on);
    let mut out: Vec<LinuxNamespace> = given
        .unwrap_or_default()
        .iter()
        .filter(|n| !is_shared(n.typ()))
        .cloned()
        .collect();
    for (typ, on, name) in shared {
        if on {
            out.push(ns(typ, Some(sandbox.ns_path(name))));
        }
    }
    for typ in [T::Mount, T::Pid, T::Network, T::Ipc, T::Uts] {
        if !out.iter().any(|n| n.typ() == typ) {
            out.push(ns(typ, None));
        }
    }
    out
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    match path {
        Some(p) => b.path(p),
        None => b,
    }
    .build()
    .expect("a namespace with a type is complete")
}

/// The spec's mounts, then the request's, then the pod's resolv.conf and hostname where
/// the container does not mount those paths itself; each checked.
fn all_mounts(spec: &Spec, extra: &[ProtoMount], sandbox: &Sandbox) -> Result<Vec<Mount>> {
    let own = sandbox.dir.as_path();
    let mut out = Vec::new();
    for (i, m) in spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        out.push(mounts::check(
            &format!("{SPEC_FIELD}.mounts[{i}]"),
            m,
            &sandbox.roots,
            own,
        )?);
    }
    for (i, m) in extra.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let built = MountBuilder::default()
            .destination(&m.destination)
            .typ(&m.r#type)
            .source(&m.source)
            .options(m.options.clone())
            .build()
            .map_err(|e| AgentError::invalid(&field, e))?;
        out.push(mounts::check(&field, built, &sandbox.roots, own)?);
    }
    for (file, dest) in [
        ("resolv.conf", "/etc/resolv.conf"),
        ("hostname", "/etc/hostname"),
    ] {
        let source = own.join(file);
        if source.exists() && !out.iter().any(|m| m.destination() == Path::new(dest)) {
            out.push(
                MountBuilder::default()
                    .destination(dest)
                    .typ("bind")
                    .source(source)
                    .options(vec!["rbind".to_string(), "ro".to_string()])
                    .build()
                    .map_err(|e| AgentError::invalid(SPEC_FIELD, e))?,
            );
        }
    }
    Ok(out)
}

/// An exec's OCI process: the container's own, with what the request sets.
pub fn exec_process(template: &Process, req: &cocoon_proto::agent::v1::Process) -> Result<Process> {
    let mut p = template.clone();
    if req.args.is_empty() {
        return Err(AgentError::invalid("process.args", "empty"));
    }
    p.set_args(Some(req.args.clone()));
    if !req.env.is_empty() {
        p.set_env(Some(req.env.clone()));
    }
    if !req.cwd.is_empty() {
        p.set_cwd(validate::absolute_normal("process.cwd", &req.cwd)?);
    }
    if let Some(u) = &req.user {
        let mut user = p.user().clone();
        user.set_uid(u.uid);
        user.set_gid(u.gid);
        user.set_additional_gids(Some(u.additional_gids.clone()).filter(|g| !g.is_empty()));
        p.set_user(user);
    }
    p.set_terminal(Some(req.terminal));
    p.set_console_size(None);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Shared;
    use std::sync::Mutex;

    fn sandbox(root: &Path, shared: Shared) -> Sandbox {
        Sandbox {
            id: "p".into(),
            dir: root.join("pod"),
            cgroup: "cocoon/p".into(),
            cgroup_created: vec![],
            roots: vec![root.to_path_buf()],
            shared_mounts: vec![],
            shared,
            pause: nix::unistd::Pid::from_raw(42),
            pause_exit: Mutex::new(None),
            containers: Mutex::default(),
        }
    }

    fn spec_json(extra: serde_json::Value) -> String {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": true},
            "hooks": {"prestart": [{"path": "/usr/bin/host-hook"}]},
            "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/host"}, {"type": "mount"}]}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v.to_string()
    }

    #[test]
    fn adapts_root_cgroup_namespaces_and_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let shared = Shared {
            network: true,
            ipc: true,
            uts: true,
            pid: false,
        };
        let sb = sandbox(&root, shared);
        let at = Placement {
            sandbox: &sb,
            rootfs: Path::new("/run/c/rootfs"),
            cgroup: Path::new("cocoon/p/c"),
        };
        let spec = prepare(&spec_json(serde_json::json!({})), &[], &at).unwrap();
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/run/c/rootfs")
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert!(spec.hooks().is_none());
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/cocoon/p/c"))
        );
        let ns = linux.namespaces().as_ref().unwrap();
        let find = |t| {
            ns.iter()
                .find(|n| n.typ() == t)
                .unwrap_or_else(|| panic!("{t:?} missing"))
        };
        use LinuxNamespaceType as T;
        assert_eq!(
            find(T::Network).path().as_deref(),
            Some(Path::new("/proc/42/ns/net"))
        );
        assert_eq!(
            find(T::Uts).path().as_deref(),
            Some(Path::new("/proc/42/ns/uts"))
        );
        assert!(
            find(T::Pid).path().is_none(),
            "unshared PID namespace is the container's own"
        );
        assert!(find(T::Mount).path().is_none());
        assert_eq!(ns.iter().filter(|n| n.typ() == T::Network).count(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let sb = sandbox(&root, Shared::default());
        let at = Placement {
            sandbox: &sb,
            rootfs: Path::new("/r"),
            cgroup: Path::new("c"),
        };
        let err = |extra| {
            prepare(&spec_json(extra), &[], &at)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(serde_json::json!({"ociVersion": "2.0"})).starts_with("oci_spec_json.ociVersion")
        );
        let no_args =
            serde_json::json!({"process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}});
        assert!(err(no_args).starts_with("oci_spec_json.process.args"));
        let rel_cwd = serde_json::json!({"process": {"args": ["x"], "cwd": "tmp", "user": {"uid": 0, "gid": 0}}});
        assert!(err(rel_cwd).starts_with("oci_spec_json.process.cwd"));
        let host_bind = serde_json::json!({"mounts": [{"destination": "/x", "type": "bind", "source": "/etc", "options": ["rbind"]}]});
        assert!(err(host_bind).starts_with("oci_spec_json.mounts[0].source"));
    }

    #[test]
    fn exec_process_inherits_what_is_not_given() {
        let mut template = Process::default();
        template.set_env(Some(vec!["A=1".into()]));
        let req = cocoon_proto::agent::v1::Process {
            args: vec!["ls".into()],
            terminal: true,
            ..Default::default()
        };
        let p = exec_process(&template, &req).unwrap();
        assert_eq!(p.args().as_deref(), Some(&["ls".to_string()][..]));
        assert_eq!(p.env().as_deref(), Some(&["A=1".to_string()][..]));
        assert_eq!(p.terminal(), Some(true));
        let bad = cocoon_proto::agent::v1::Process {
            args: vec!["ls".into()],
            cwd: "x/..".into(),
            ..Default::default()
        };
        assert!(exec_process(&template, &bad)
            .unwrap_err()
            .to_string()
            .starts_with("process.cwd"));
    }
}

//! Which mounts a container may have: bind mounts only from the pod's storage roots (or
//! the pod's own files), other filesystems only of kernel-provided kinds.

use crate::error::{AgentError, Result};
use crate::validate;
use oci_spec::runtime::Mount;
use std::path::{Path, PathBuf};

/// Filesystem types a container may mount that have no backing path.
const VIRTUAL_TYPES: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// Checks `m` (named `field` in errors) and returns it with a bind source resolved.
/// `own` is the pod's directory, whose files the agent itself mounts.
pub fn check(field: &str, mut m: Mount, roots: &[PathBuf], own: &Path) -> Result<Mount> {
    let dest = m.destination().to_string_lossy().into_owned();
    validate::absolute_normal(&format!("{field}.destination"), &dest)?;
    if is_bind(&m) {
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sfield = format!("{field}.source");
        let mut allowed = roots.to_vec();
        allowed.push(own.to_path_buf());
        let real = validate::inside_roots(&sfield, &source, &allowed)?;
        m.set_source(Some(real));
        return Ok(m);
    }
    match m.typ().as_deref() {
        Some(t) if VIRTUAL_TYPES.contains(&t) => Ok(m),
        Some(t) => Err(AgentError::invalid(
            format!("{field}.type"),
            format!("filesystem type {t:?} is not allowed; share it as a bind mount"),
        )),
        None => Err(AgentError::invalid(format!("{field}.type"), "missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn bind_sources_must_be_inside_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("vol")).unwrap();
        let roots = [root.clone()];
        let own = root.join("none");
        let ok = mount(
            "/data",
            "bind",
            root.join("vol").to_str().unwrap(),
            &["rbind"],
        );
        assert!(check("mounts[0]", ok, &roots, &own).is_ok());
        let out = mount("/etc/x", "none", "/etc", &["rbind", "ro"]);
        let e = check("mounts[1]", out, &roots, &own)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("mounts[1].source"), "{e}");
        let rel = mount(
            "data",
            "bind",
            root.join("vol").to_str().unwrap(),
            &["bind"],
        );
        let e = check("mounts[2]", rel, &roots, &own)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("mounts[2].destination"), "{e}");
    }

    #[test]
    fn only_virtual_filesystems_without_a_path() {
        let roots = [PathBuf::from("/nonexistent")];
        let own = Path::new("/nonexistent");
        assert!(check("m", mount("/proc", "proc", "proc", &[]), &roots, own).is_ok());
        let e = check("m", mount("/d", "ext4", "/dev/vda", &[]), &roots, own).unwrap_err();
        assert!(e.to_string().starts_with("m.type"), "{e}");
    }
}

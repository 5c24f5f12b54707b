//! Checks on what the host sends, before anything is created. Each failure names the
//! request field.

use crate::error::{AgentError, Result};
use std::path::{Component, Path, PathBuf};

/// Longest id accepted.
pub const MAX_ID: usize = 128;

/// Ids name directories and cgroups: letters, digits, `_ + - .`, not `.` or `..`
/// (libcontainer's rule), at most [`MAX_ID`] bytes.
pub fn id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(AgentError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID {
        return Err(AgentError::invalid(
            field,
            format!("longer than {MAX_ID} bytes"),
        ));
    }
    if value == "." || value == ".." {
        return Err(AgentError::invalid(
            field,
            format!("{value:?} is not a name"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_+-.".contains(*c)))
    {
        return Err(AgentError::invalid(
            field,
            format!("character {c:?} not allowed"),
        ));
    }
    Ok(())
}

/// An absolute path written in normal form: no `.` or `..`, no repeated or trailing
/// slash.
pub fn absolute_normal(field: &str, value: &str) -> Result<PathBuf> {
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(AgentError::invalid(
            field,
            format!("{value:?} is not absolute"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(AgentError::invalid(
            field,
            format!("{value:?} contains . or .."),
        ));
    }
    let rebuilt: PathBuf = path.components().collect();
    if rebuilt.as_os_str() != path.as_os_str() {
        return Err(AgentError::invalid(
            field,
            format!("{value:?} is not normalised"),
        ));
    }
    Ok(rebuilt)
}

/// A relative path in normal form (a cgroup below the root).
pub fn relative_normal(field: &str, value: &str) -> Result<PathBuf> {
    let path = Path::new(value);
    if value.is_empty() || path.is_absolute() {
        return Err(AgentError::invalid(
            field,
            format!("{value:?} must be a relative path"),
        ));
    }
    for c in path.components() {
        match c {
            Component::Normal(part) => id(field, &part.to_string_lossy())?,
            _ => {
                return Err(AgentError::invalid(
                    field,
                    format!("{value:?} is not normalised"),
                ))
            }
        }
    }
    let rebuilt: PathBuf = path.components().collect();
    if rebuilt.as_os_str() != path.as_os_str() {
        return Err(AgentError::invalid(
            field,
            format!("{value:?} is not normalised"),
        ));
    }
    Ok(rebuilt)
}

/// Resolves `value` (absolute, normal form) through symlinks and requires the result to
/// lie inside one of `roots` (themselves resolved). Returns the resolved path.
pub fn inside_roots(field: &str, value: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    let path = absolute_normal(field, value)?;
    let real = std::fs::canonicalize(&path)
        .map_err(|e| AgentError::invalid(field, format!("{value:?}: {e}")))?;
    if roots.iter().any(|r| real.starts_with(r)) {
        Ok(real)
    } else {
        Err(AgentError::invalid(
            field,
            format!("{value:?} is outside the pod's storage roots"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(id("f", "pod-1_a.b+c").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(MAX_ID + 1)] {
            let e = id("sandbox_id", bad).unwrap_err().to_string();
            assert!(e.starts_with("sandbox_id: "), "{e}");
        }
    }

    #[test]
    fn paths_in_normal_form() {
        assert_eq!(absolute_normal("f", "/a/b").unwrap(), PathBuf::from("/a/b"));
        for bad in ["a/b", "/a/../b", "/a/./b", "/a//b", "/a/b/"] {
            assert!(absolute_normal("rootfs", bad).is_err(), "{bad}");
        }
        assert_eq!(
            relative_normal("f", "cocoon/p1").unwrap(),
            PathBuf::from("cocoon/p1")
        );
        for bad in ["", "/abs", "a/../b", "a//b", "a b/c"] {
            assert!(relative_normal("cgroup_parent", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinks_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("img")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        let roots = [std::fs::canonicalize(&root).unwrap()];
        let ok = root.join("img");
        assert!(inside_roots("rootfs", ok.to_str().unwrap(), &roots).is_ok());
        let esc = root.join("escape");
        let e = inside_roots("rootfs", esc.to_str().unwrap(), &roots).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(inside_roots("rootfs", "/etc", &roots).is_err());
    }
}

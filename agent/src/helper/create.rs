//! Create, start and delete through libcontainer.

use super::{chain, STDIO_FDS};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use std::path::Path;

pub fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    console_socket: Option<&Path>,
) -> Result<i32, String> {
    let container = builder(root, id, console_socket)?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| chain(&e))?;
    container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| "container has no pid".to_string())
}

/// A builder for container `id` under `root` whose stdio is the console socket if one
/// is given, else descriptors 3/4/5 (see [`with_stdio`]); create and exec share it.
pub(super) fn builder(
    root: &Path,
    id: &str,
    console_socket: Option<&Path>,
) -> Result<ContainerBuilder, String> {
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(root)
        .map_err(|e| chain(&e))?
        .validate_id()
        .map_err(|e| chain(&e))?;
    match console_socket {
        Some(sock) => Ok(builder.with_console_socket(Some(sock))),
        None => with_stdio(builder),
    }
}

/// Hands descriptors 3/4/5 to libcontainer as the process's stdio.
fn with_stdio(builder: ContainerBuilder) -> Result<ContainerBuilder, String> {
    let take = |fd| {
        crate::sys::take_inherited_fd(fd).ok_or_else(|| format!("stdio descriptor {fd} not open"))
    };
    let [stdin, stdout, stderr] = STDIO_FDS;
    Ok(builder
        .with_stdin(take(stdin)?)
        .with_stdout(take(stdout)?)
        .with_stderr(take(stderr)?))
}

pub fn start(root: &Path, id: &str) -> Result<(), String> {
    let mut container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
    container.start().map_err(|e| chain(&e))
}

pub fn delete(root: &Path, id: &str) -> Result<(), String> {
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    let mut container = Container::load(dir).map_err(|e| chain(&e))?;
    container.delete(true).map_err(|e| chain(&e))
}

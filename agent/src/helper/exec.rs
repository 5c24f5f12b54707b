//! Exec: a tenant process joining a running container.

use super::chain;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use std::path::Path;

pub fn exec(
    root: &Path,
    id: &str,
    process: &Path,
    console_socket: Option<&Path>,
) -> Result<i32, String> {
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(root)
        .map_err(|e| chain(&e))?
        .validate_id()
        .map_err(|e| chain(&e))?;
    builder = match console_socket {
        Some(sock) => builder.with_console_socket(Some(sock)),
        None => super::create::with_stdio(builder)?,
    };
    let pid = builder
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .build()
        .map_err(|e| chain(&e))?;
    Ok(pid.as_raw())
}

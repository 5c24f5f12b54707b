//! Exec: a tenant process joining a running container.

use super::chain;
use std::path::Path;

pub fn exec(
    root: &Path,
    id: &str,
    process: &Path,
    console_socket: Option<&Path>,
) -> Result<i32, String> {
    let pid = super::create::builder(root, id, console_socket)?
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .build()
        .map_err(|e| chain(&e))?;
    Ok(pid.as_raw())
}

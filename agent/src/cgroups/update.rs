//! Live resource updates through libcgroups (the same code that applied the spec's
//! limits at create time, so conversions such as CPU shares → weight agree).

use crate::error::{AgentError, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;
use std::path::Path;

pub fn apply(root: &Path, rel: &Path, resources: &LinuxResources) -> Result<()> {
    let manager = libcgroups::v2::manager::Manager::new(root.to_path_buf(), rel.to_path_buf())
        .map_err(|e| AgentError::precondition(format!("cgroup {}: {e}", rel.display())))?;
    let opt = ControllerOpt {
        resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    };
    manager.apply(&opt).map_err(|e| {
        AgentError::precondition(format!(
            "apply resources to cgroup {}: {e} (is the controller available?)",
            rel.display()
        ))
    })
}

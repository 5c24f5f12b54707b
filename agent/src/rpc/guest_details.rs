//! GetGuestDetails: kernel, resources, agent version, boot timings.

use super::AgentState;
use crate::boot_clock::since_boot_ns;
use crate::guest_info::read_machine_facts;
use cocoon_proto::agent::v1::{BootTimes, GuestDetails};

pub fn guest_details(state: &AgentState) -> GuestDetails {
    let facts = read_machine_facts();
    let marks = state.marks();
    GuestDetails {
        kernel_release: facts.kernel_release,
        kernel_version: facts.kernel_version,
        memory_total_bytes: facts.memory_total_bytes,
        vcpus: facts.vcpus,
        agent_version: crate::VERSION.to_string(),
        boot: Some(BootTimes {
            agent_started_ns: marks.started_ns,
            agent_ready_ns: marks.ready_ns,
            now_ns: since_boot_ns(),
        }),
        modules_loaded: state.setup.modules_loaded.clone(),
        guest: state.guest,
    }
}

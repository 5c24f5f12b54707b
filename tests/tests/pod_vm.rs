//! A real pod VM under QEMU (TCG on these machines): the agent channel end to end.
//! The scenarios are shared with the builtin VMM's suite (`builtin_vmm.rs`).

use cocoon_tests::{scenario, scratch, vm_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_channel_end_to_end() {
    let dir = scratch();
    scenario::agent_channel_end_to_end(vm_config(dir.path(), "vm")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_vmm_is_reported_with_its_status() {
    let dir = scratch();
    scenario::killed_vmm_is_reported_with_its_status(vm_config(dir.path(), "vm")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_kernel_panic_is_reported_with_the_console() {
    let dir = scratch();
    scenario::guest_kernel_panic_is_reported_with_the_console(vm_config(dir.path(), "vm")).await;
}

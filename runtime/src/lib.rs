//! Cocoon's host runtime: pod VMs and the client of the agent inside them.
//!
//! [`pod_vm::PodVm`] boots a VM through `cocoon-hypervisor` and waits, through the
//! hybrid vsock socket, until the agent answers ([`agent_client`]).

pub mod agent_client;
pub mod cli;
pub mod config;
pub mod cri;
pub mod cri_client;
pub mod cri_log;
pub mod daemon;
pub mod guest_image;
pub mod oci;
pub mod pod_vm;
pub mod procs;
pub mod run_container;
pub mod shared_fs;

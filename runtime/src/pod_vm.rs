//! A pod VM: the VM plus a ready agent client, and the timings of getting there.

use crate::agent_client::{wait_ready, AgentClient, ReadyError};
use cocoon_hypervisor::config::ValidVmConfig;
use cocoon_hypervisor::{Vm, VmError, VmExit};
use cocoon_proto::agent::v1::{GetGuestDetailsRequest, GuestDetails, ShutdownRequest};
use cocoon_proto::AGENT_VSOCK_PORT;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PodVmError {
    #[error("start VM")]
    Start(#[from] VmError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error("GetGuestDetails: {0}")]
    Details(tonic::Status),
}

/// Where the time from launch to a serving agent went.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootTimings {
    /// Launch (vsock device + VMM spawn) until the guest kernel started.
    pub vmm_start: Duration,
    /// Guest kernel start until the agent's first instruction.
    pub kernel_boot: Duration,
    /// Agent start until it listened on vsock.
    pub agent_init: Duration,
    /// Agent listening until the host's Health call succeeded.
    pub handshake: Duration,
    /// Launch until the host's Health call succeeded (the sum of the above, measured).
    pub total: Duration,
    pub attempts: u32,
}

/// A booted pod VM with a serving agent.
#[derive(Debug)]
pub struct PodVm {
    pub vm: Vm,
    pub agent: AgentClient,
}

impl PodVm {
    /// Boots the VM and waits at most `ready_timeout` for its agent.
    pub async fn boot(
        cfg: &ValidVmConfig,
        ready_timeout: Duration,
    ) -> Result<(Self, GuestDetails, BootTimings), PodVmError> {
        let launched = Instant::now();
        let vm = Vm::start(cfg).await?;
        let (mut agent, readiness) = wait_ready(&vm, AGENT_VSOCK_PORT, ready_timeout).await?;
        let ready = launched.elapsed();
        let asked = Instant::now();
        let details = agent
            .agent
            .get_guest_details(GetGuestDetailsRequest {})
            .await
            .map_err(PodVmError::Details)?
            .into_inner();
        let answered = launched.elapsed();
        let rtt = asked.elapsed();
        let mut timings = split_timings(&details, answered, rtt, ready);
        timings.attempts = readiness.attempts;
        Ok((Self { vm, agent }, details, timings))
    }

    /// Asks the agent to shut the guest down, then stops the VM (forcing it after
    /// `grace`). Works when the agent is gone too.
    pub async fn shutdown(mut self, grace: Duration) -> VmExit {
        let asked =
            tokio::time::timeout(grace, self.agent.agent.shutdown(ShutdownRequest {})).await;
        if !matches!(asked, Ok(Ok(_))) {
            tracing::warn!("agent did not take the shutdown request; stopping the VM");
        }
        self.vm.stop(grace).await
    }
}

/// Splits launch → ready using the guest's clock: the kernel started `now_ns` before the
/// details answer was made (about half a round trip before it arrived).
fn split_timings(
    d: &GuestDetails,
    answered: Duration,
    rtt: Duration,
    ready: Duration,
) -> BootTimings {
    let boot = d.boot.unwrap_or_default();
    let ns = Duration::from_nanos;
    let kernel_started = answered
        .saturating_sub(rtt / 2)
        .saturating_sub(ns(boot.now_ns));
    let agent_listening = kernel_started + ns(boot.agent_ready_ns);
    BootTimings {
        vmm_start: kernel_started,
        kernel_boot: ns(boot.agent_started_ns),
        agent_init: ns(boot.agent_ready_ns.saturating_sub(boot.agent_started_ns)),
        handshake: ready.saturating_sub(agent_listening),
        total: ready,
        attempts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_proto::agent::v1::BootTimes;

    #[test]
    fn timings_add_up() {
        let ms = Duration::from_millis;
        let d = GuestDetails {
            boot: Some(BootTimes {
                agent_started_ns: 900_000_000,
                agent_ready_ns: 950_000_000,
                now_ns: 1_000_000_000,
            }),
            ..Default::default()
        };
        // Kernel started at 200 ms; ready seen at 1 s; details answered at 1.2 s.
        let t = split_timings(&d, ms(1210), ms(20), ms(1180));
        assert_eq!(t.vmm_start, ms(200));
        assert_eq!(t.kernel_boot, ms(900));
        assert_eq!(t.agent_init, ms(50));
        assert_eq!(t.handshake, ms(30));
        assert_eq!(
            t.vmm_start + t.kernel_boot + t.agent_init + t.handshake,
            t.total
        );
    }
}

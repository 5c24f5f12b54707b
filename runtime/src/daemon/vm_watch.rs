//! A pod whose VM ends without being asked (a guest panic, the VMM killed or crashed)
//! becomes NotReady at once, with the reason, so kubelet recreates it; its containers'
//! monitors report them exited when their agent streams break.

use super::records::PodState;
use super::{lock, Daemon, Pod};
use cocoon_hypervisor::Vm;
use std::sync::Arc;

impl Daemon {
    pub(super) fn watch_vm(self: &Arc<Self>, pod: Arc<Pod>, vm: Arc<Vm>) {
        let daemon = self.clone();
        tokio::spawn(async move {
            let exit = vm.wait().await;
            // Teardown takes the VM out of the pod before stopping it: still there means
            // nobody asked it to end.
            let ours = {
                let mut slot = lock(&pod.vm);
                let ours = slot.as_ref().is_some_and(|v| Arc::ptr_eq(v, &vm));
                if ours {
                    slot.take();
                }
                ours
            };
            if !ours {
                return;
            }
            lock(&pod.agent).take();
            tracing::warn!(pod = %pod.id, %exit, "the pod's VM ended on its own");
            if let Err(e) = daemon.save_pod(&pod, |r| {
                r.state = PodState::NotReady;
                r.vm = None;
                r.message = format!("the pod's VM ended: {exit}");
            }) {
                tracing::error!(pod = %pod.id, error = %e, "could not record the VM's end");
            }
        });
    }
}

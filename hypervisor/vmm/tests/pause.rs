//! `Vmm::pause` / `Vmm::resume` on a tiny guest with two vCPUs: the boot vCPU loops
//! writing to COM1, the second one waits in KVM for an INIT/SIPI that never comes.
//! Both must park, the guest must make no progress while paused, and a paused VM
//! must resume, pause again and stop.

mod common;

use std::time::{Duration, Instant};

use cocoon_vmm::{PauseError, VmExit, Vmm};
use common::asm::Asm;
use common::{kvm_or_skip, raw_config};

const COM1: u16 = 0x3f8;
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until the guest's port exits pass `than`.
fn wait_progress(vmm: &Vmm, than: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pio = vmm.stats().pio;
        if pio > than {
            return pio;
        }
        assert!(Instant::now() < deadline, "the guest made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pause_freezes_the_guest_and_resume_lets_it_go_on() {
    if !kvm_or_skip("pause") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new()
        .label("top")
        .outb_str(COM1, b".")
        .jmp("top")
        .finish();
    let mut config = raw_config(code, dir.path().join("serial.log"));
    config.vcpus = 2;
    let vmm = Vmm::start(config).expect("VM starts");
    assert_eq!(vmm.resume(), Err(PauseError::NotPaused));
    wait_progress(&vmm, 0);

    for round in 0..3 {
        vmm.pause().expect("every vCPU parks");
        assert!(vmm.is_paused());
        assert_eq!(vmm.pause(), Err(PauseError::AlreadyPaused));
        let frozen = vmm.stats();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            vmm.stats(),
            frozen,
            "round {round}: the guest ran while paused"
        );
        assert_eq!(vmm.exit_status(), None);
        vmm.resume().unwrap();
        assert!(!vmm.is_paused());
        wait_progress(&vmm, frozen.pio);
    }

    // A paused VM stops like a running one.
    vmm.pause().unwrap();
    let t = Instant::now();
    assert_eq!(vmm.shutdown(), VmExit::Stopped);
    eprintln!("stop from paused took {:?}", t.elapsed());
    assert_eq!(vmm.pause(), Err(PauseError::Ended));
    assert_eq!(vmm.resume(), Err(PauseError::Ended));
    assert_eq!(vmm.exit_status(), Some(VmExit::Stopped));
}

#[test]
fn a_vm_that_ended_cannot_be_paused() {
    if !kvm_or_skip("pause after end") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = Asm::new().exit(0x11).finish();
    let vmm = Vmm::start(raw_config(code, dir.path().join("serial.log"))).unwrap();
    assert_eq!(vmm.wait_timeout(PATIENCE), Some(VmExit::DebugExit(0x11)));
    assert_eq!(vmm.pause(), Err(PauseError::Ended));
    assert_eq!(vmm.stop(), VmExit::DebugExit(0x11));
}

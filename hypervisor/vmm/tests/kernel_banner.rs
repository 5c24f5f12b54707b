//! Boots our guest kernel (`target/guest-image/vmlinux`, from guest-image/build.sh)
//! through its PVH entry and checks the boot banner on the serial console.
//!
//! On a nested paravirtual KVM (PVM) the kernel prints its banner and then stalls
//! in KVM's instruction emulator, so the test stops the VM itself after the banner.
//! On hardware KVM it also waits for the kernel to panic for want of a root file
//! system and reboot, which `reboot=t panic=-1` turn into a triple fault: a clean
//! VM exit.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cocoon_vmm::host::hardware_kvm;
use cocoon_vmm::{BootSource, ResetCause, SerialOutput, VmConfig, VmExit, Vmm};
use common::kvm_or_skip;

const BANNER: &str = "Linux version 6.1";
const BANNER_TIMEOUT: Duration = Duration::from_secs(60);
const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);
const CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0 reboot=t panic=-1 \
                       tsc=reliable i8042.noaux";

fn kernel_path() -> PathBuf {
    match std::env::var_os("COCOON_GUEST_VMLINUX") {
        Some(p) => p.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guest-image/vmlinux"),
    }
}

/// Polls the serial log until it contains `needle`, the VM ends, or `timeout`.
fn wait_for(vmm: &Vmm, log: &PathBuf, needle: &str, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return (true, text);
        }
        if Instant::now() >= deadline || vmm.wait_timeout(Duration::from_millis(50)).is_some() {
            return (false, text);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn kernel_boots_over_pvh_and_prints_its_banner() {
    if !kvm_or_skip("kernel banner") {
        return;
    }
    let kernel = kernel_path();
    if !kernel.exists() {
        eprintln!(
            "SKIP kernel banner: no guest kernel at {} (build it with guest-image/build.sh)",
            kernel.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let config = VmConfig {
        memory_mib: 256,
        serial: SerialOutput::File(log.clone()),
        entropy: true,
        ..VmConfig::new(BootSource::Kernel {
            path: kernel,
            cmdline: CMDLINE.into(),
        })
    };
    let start = Instant::now();
    let vmm = Vmm::start(config).expect("VM starts");
    let (found, text) = wait_for(&vmm, &log, BANNER, BANNER_TIMEOUT);
    let banner_at = start.elapsed();
    eprintln!(
        "kernel: banner {} after {banner_at:?}; exit so far: {:?}; {:?}",
        if found { "seen" } else { "NOT seen" },
        vmm.wait_timeout(Duration::ZERO),
        vmm.stats()
    );
    eprintln!("--- serial (last lines) ---\n{}\n---", tail(&text, 15));
    assert!(found, "no kernel banner within {BANNER_TIMEOUT:?}");

    match hardware_kvm() {
        Ok(()) => {
            let exit = vmm.wait_timeout(REBOOT_TIMEOUT);
            let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
            eprintln!("--- serial (last lines) ---\n{}\n---", tail(&text, 15));
            assert_eq!(exit, Some(VmExit::Reset(ResetCause::TripleFault)));
        }
        Err(why) => {
            // Give the kernel a moment to show how far it gets, then end the VM.
            std::thread::sleep(Duration::from_secs(2));
            let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
            eprintln!(
                "further boot needs hardware KVM ({why}); after 2 s more the kernel \
                 wrote {} bytes, last line: {:?}",
                text.len(),
                text.lines().last().unwrap_or_default()
            );
        }
    }
    let stop = Instant::now();
    let exit = vmm.stop();
    eprintln!("kernel: VM ended ({exit}); stop took {:?}", stop.elapsed());
    assert!(stop.elapsed() < Duration::from_secs(5));
}

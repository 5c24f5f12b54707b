//! Boots our guest kernel (`target/guest-image/vmlinux`, from guest-image/build.sh)
//! through its PVH entry and checks the boot banner on the serial console, and, with
//! the initramfs beside it, that the kernel found the initrd (its `RAMDISK:` line).
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

fn image_file(var: &str, name: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => p.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/guest-image")
            .join(name),
    }
}

fn kernel_path() -> PathBuf {
    image_file("COCOON_GUEST_VMLINUX", "vmlinux")
}

/// `COCOON_GUEST_INITRD`, else the initramfs beside the default kernel.
fn initrd_path() -> Option<PathBuf> {
    Some(image_file("COCOON_GUEST_INITRD", "initramfs.img")).filter(|p| p.exists())
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
    let initrd = initrd_path();
    let config = VmConfig {
        memory_mib: 256,
        serial: SerialOutput::File(log.clone()),
        entropy: true,
        ..VmConfig::new(BootSource::Kernel {
            path: kernel,
            // With an initrd, no init from it: the kernel still panics for want of a
            // root file system, as the reboot check below expects.
            cmdline: match &initrd {
                Some(_) => format!("{CMDLINE} rdinit=/no-such-init"),
                None => CMDLINE.into(),
            },
            initrd: initrd.clone(),
        })
    };
    let start = Instant::now();
    let vmm = common::start(config);
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
    if let Some(initrd) = &initrd {
        // Printed early in setup_arch, before the point a PVM host gets stuck at.
        let (found, text) = wait_for(&vmm, &log, "RAMDISK: [mem 0x", BANNER_TIMEOUT);
        let line = text.lines().find(|l| l.contains("RAMDISK:"));
        eprintln!("initrd {}: {line:?}", initrd.display());
        assert!(found, "the kernel did not report the initrd");
    }

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

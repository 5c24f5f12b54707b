//! Shared helpers for tests that run real (tiny) guests on /dev/kvm.

#![allow(dead_code)]

pub mod asm;
pub mod guest;
pub mod mmio;
pub mod pvh;
pub mod virtiofsd;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cocoon_vmm::seccomp::{self, Mode};
use cocoon_vmm::{BootSource, SerialOutput, VmConfig, VmExit, Vmm};

/// Where test code is loaded and entered (1 MiB).
pub const CODE_ADDR: u64 = 0x10_0000;

/// Whether /dev/kvm exists; prints why the test is skipped when it does not. A
/// /dev/kvm that exists but cannot be used fails the test instead.
pub fn kvm_or_skip(test: &str) -> bool {
    let present = std::path::Path::new("/dev/kvm").exists();
    if !present {
        eprintln!("SKIP {test}: this host has no /dev/kvm");
    }
    present
}

/// Seccomp filters on, as the `cocoon-vmm` binary has them by default: the vCPU and
/// device threads of the test's VMs run under their filters, and a call a filter
/// lacks ends the test process with status 159, naming the call and the thread.
pub fn seccomp_on() {
    seccomp::prepare(Mode::Trap).expect("the seccomp filters compile");
}

/// Starts `config` with seccomp filters on.
pub fn start(config: VmConfig) -> Vmm {
    seccomp_on();
    Vmm::start(config).expect("VM starts")
}

/// A configuration for raw test code: 1 vCPU, 32 MiB, debug-exit port, serial log.
pub fn raw_config(code: Vec<u8>, serial_log: PathBuf) -> VmConfig {
    VmConfig {
        memory_mib: 32,
        serial: SerialOutput::File(serial_log),
        debug_exit: true,
        ..VmConfig::new(BootSource::Raw {
            code,
            load_addr: CODE_ADDR,
        })
    }
}

/// Asserts that a test guest's driver exited with `ok`; an exit code in `failures`
/// fails the test with its reason.
pub fn assert_driver_ok(exit: &VmExit, ok: u8, failures: &[(u8, &str)]) {
    if let VmExit::DebugExit(code) = exit {
        if let Some((_, why)) = failures.iter().find(|(c, _)| c == code) {
            panic!("guest driver failed: {why}");
        }
    }
    assert_eq!(*exit, VmExit::DebugExit(ok));
}

/// What a finished test VM left behind.
pub struct Outcome {
    pub exit: Option<VmExit>,
    pub serial: String,
    pub elapsed: Duration,
    pub first_exit: Option<Duration>,
    pub vmm: Vmm,
}

/// Starts `config`, waits up to `timeout` for the VM to end on its own, and
/// returns the still-owned VMM (drop or stop it to end the vCPUs).
pub fn run(config: VmConfig, timeout: Duration) -> Outcome {
    let log = match &config.serial {
        SerialOutput::File(path) => Some(path.clone()),
        _ => None,
    };
    let started = Instant::now();
    let vmm = start(config);
    let exit = vmm.wait_timeout(timeout);
    let elapsed = started.elapsed();
    let serial = log
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .unwrap_or_default();
    Outcome {
        exit,
        serial,
        elapsed,
        first_exit: vmm.time_to_first_exit(),
        vmm,
    }
}

//! A thread under the build seccomp filter builds, runs and stops a VM, as
//! cocoon-vmm's main thread does: building needs its list, and the vCPU and device threads it
//! starts inherit its filter and stack their own on it, so a call any of the lists
//! lacks ends this test process with status 159, naming the call and the thread.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use cocoon_vmm::seccomp::{self, ThreadKind};
use cocoon_vmm::{VmExit, Vmm, VsockSpec};
use common::guest::{self, GUEST_CID, GUEST_PORT, OK};
use common::mmio::MMIO;
use common::{kvm_or_skip, raw_config, seccomp_on};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn an_api_thread_runs_a_vm_with_every_filter_stacked() {
    if !kvm_or_skip("seccomp api") {
        return;
    }
    seccomp_on();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let mut config = raw_config(
        guest::rng_and_vsock(MMIO, MMIO + 0x1000),
        dir.path().join("serial.log"),
    );
    config.vcpus = 2;
    config.entropy = true;
    config.vsock = Some(VsockSpec {
        guest_cid: GUEST_CID.into(),
        uds_path: uds.clone(),
    });

    let (started, ready) = mpsc::channel();
    let api = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            seccomp::try_apply(ThreadKind::Build).expect("the build filter installs");
            let vmm = Vmm::start(config).expect("VM starts");
            started.send(()).unwrap();
            let exit = vmm.wait_timeout(WAIT);
            let stats = vmm.stats();
            (exit, vmm.stop(), stats)
        })
        .unwrap();

    ready.recv_timeout(WAIT).expect("the VM started");
    let mut client = UnixStream::connect(&uds).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
        .unwrap();
    // "OK <host port>\n", the guest's "hi\n", then the end of the stream when the
    // VM stops.
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("OK ") && got.ends_with("\nhi\n"), "{got:?}");

    let (exit, stopped, stats) = api.join().unwrap();
    if let Some(VmExit::DebugExit(code)) = exit {
        if let Some(why) = guest::failure(code) {
            panic!("guest driver failed: {why}");
        }
    }
    assert_eq!(exit, Some(VmExit::DebugExit(OK)), "{stats:?}");
    assert_eq!(stopped, VmExit::DebugExit(OK));
    assert!(
        !uds.exists(),
        "the hybrid socket is removed when the VM ends"
    );
    let serial = std::fs::read_to_string(dir.path().join("serial.log")).unwrap();
    assert_eq!(serial, "ok\n");
}

//! Tiny guests of our own on /dev/kvm: long-mode entry, serial output, the
//! debug-exit port, i8042 reset, triple fault, and stopping guests that never end.

mod common;

use std::time::{Duration, Instant};

use cocoon_vmm::{ResetCause, VmExit};
use common::asm::Asm;
use common::{kvm_or_skip, raw_config, run};

const COM1: u16 = 0x3f8;
const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn long_mode_guest_writes_hello_to_serial_and_exits_with_code() {
    if !kvm_or_skip("hello") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The vCPU starts in 64-bit mode at the code: print, then exit with 0x31.
    let code = Asm::new().outb_str(COM1, b"hello\n").exit(0x31).finish();
    let out = run(raw_config(code, dir.path().join("serial.log")), TIMEOUT);
    assert_eq!(out.exit, Some(VmExit::DebugExit(0x31)));
    assert_eq!(out.serial, "hello\n");
    let stats = out.vmm.stats();
    assert!(stats.pio >= 7, "{stats:?}");
    eprintln!(
        "hello guest: start to first guest exit {:?}, start to VM exit {:?}",
        out.first_exit.unwrap(),
        out.elapsed
    );
    assert_eq!(out.vmm.stop(), VmExit::DebugExit(0x31));
}

#[test]
fn i8042_reset_ends_the_vm_cleanly() {
    if !kvm_or_skip("i8042") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // mov dx, 0x64; mov al, 0xfe; out dx, al; jmp $
    let code = Asm::new().outb_str(0x64, &[0xfe]).spin().finish();
    let out = run(raw_config(code, dir.path().join("serial.log")), TIMEOUT);
    assert_eq!(out.exit, Some(VmExit::Reset(ResetCause::I8042)));
}

#[test]
fn triple_fault_ends_the_vm_cleanly() {
    if !kvm_or_skip("triple fault") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // ud2 with an IDT whose limit covers no vector: #UD -> #GP -> #DF -> shutdown.
    let code = Asm::new().ud2().exit(0x99).finish();
    let out = run(raw_config(code, dir.path().join("serial.log")), TIMEOUT);
    assert_eq!(out.exit, Some(VmExit::Reset(ResetCause::TripleFault)));
}

#[test]
fn unmapped_and_odd_accesses_do_not_stop_the_guest() {
    if !kvm_or_skip("unmapped") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Port 0x80 (POST), an unmapped MMIO read and write in the gap, then exit.
    let code = Asm::new()
        .outb_str(0x80, &[0x12])
        .mov_edi(0xdead_0000)
        .load32_rdi(0)
        .store32_rdi(4, 0x1234)
        .cmp_eax(0xffff_ffff)
        .jne("bad")
        .exit(0x10)
        .label("bad")
        .exit(0x20)
        .finish();
    let out = run(raw_config(code, dir.path().join("serial.log")), TIMEOUT);
    assert_eq!(
        out.exit,
        Some(VmExit::DebugExit(0x10)),
        "unmapped MMIO reads as all ones"
    );
    assert!(out.vmm.stats().unhandled >= 3);
}

/// Guests that never exit: a spinning BSP plus an AP waiting for INIT/SIPI, and a
/// guest halted in the kernel's irqchip. Both must stop promptly.
#[test]
fn stop_ends_spinning_and_halted_guests() {
    if !kvm_or_skip("stop") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, code) in [
        ("spin", Asm::new().spin().finish()),
        ("hlt", Asm::new().hlt().spin().finish()),
    ] {
        let mut config = raw_config(code, dir.path().join(format!("{name}.log")));
        config.vcpus = 2;
        let out = run(config, Duration::from_millis(300));
        assert_eq!(out.exit, None, "{name} guest ended by itself");
        let t = Instant::now();
        assert_eq!(out.vmm.stop(), VmExit::Stopped);
        let took = t.elapsed();
        eprintln!("{name} guest: stop took {took:?}");
        assert!(took < Duration::from_secs(2), "{name}: stop took {took:?}");
    }
}

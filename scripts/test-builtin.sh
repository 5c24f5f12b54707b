#!/usr/bin/env bash
# The builtin VMM end to end, on a machine whose KVM boots Linux (hardware KVM):
# the guest image and the binaries first, then cocoon-vmm's own suite (the kernel
# banner test then boots to a clean reboot), the pod VM scenarios the QEMU suite
# runs (tests/src/scenario.rs), and cocoond's CRI suite (tests/tests/cri.rs: pods,
# containers, volumes over virtio-fs, exec, logs, restart recovery, VM death) with
# its pods on cocoon-vmm (COCOON_TEST_BACKEND=builtin), seccomp filters on.
#
#   scripts/test-builtin.sh
#
# Elsewhere (no /dev/kvm, or the nested paravirtual kvm_pvm) those scenarios would only
# be skipped, so this script refuses to run and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

why=""
if [ ! -w /dev/kvm ]; then
    why="/dev/kvm is missing or not writable"
elif [ -e /sys/module/kvm_pvm ]; then
    why="/dev/kvm is a nested paravirtual KVM (kvm_pvm), which cannot boot Linux"
elif ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    why="the CPU shows no vmx/svm flag"
fi
if [ -n "$why" ]; then
    echo "test-builtin: needs hardware KVM: $why" >&2
    exit 1
fi

scripts/setup.sh
cargo build --workspace --bins
cargo test -p cocoon-vmm -- --test-threads=2
cargo test -p cocoon-tests --test builtin_vmm -- --test-threads=1 --nocapture
COCOON_TEST_BACKEND=builtin cargo test -p cocoon-tests --test cri -- --test-threads=1

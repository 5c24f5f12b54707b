#!/usr/bin/env bash
# Shared filesystem benchmark (see tests/examples/bench_sharedfs.rs), QEMU; TCG here:
#   start of a pod VM with and without a shared fs (virtiofsd), interleaved, medians;
#   virtiofsd's host memory idle and after the reads;
#   sequential read of a 64 MiB file (dd bs=1M in an exec'd process) from the shared fs
#   vs from the guest's tmpfs.
# Needs root (virtiofsd's chroot sandbox) and virtiofsd (scripts/setup.sh).
# Usage: scripts/bench-sharedfs.sh [runs=5]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}

scripts/setup.sh >/dev/null
guest-image/build.sh >/dev/null
cargo build --release -q -p cocoon-vsock --bins
cargo build --release -q -p cocoon-tests --example bench_sharedfs
target/release/examples/bench_sharedfs "$RUNS"

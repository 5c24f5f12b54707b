#!/usr/bin/env bash
# cocoond benchmark (see tests/examples/bench_cri.rs): RunPodSandbox → ready and
# CreateContainer + StartContainer through the CRI, medians and p95, with the daemon's
# breakdown, beside a bare boot of the same kernel + initrd, interleaved in one run.
# Needs root (virtiofsd, bind mounts). Usage: scripts/bench-cri.sh [runs=10]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}

scripts/setup.sh >/dev/null
cargo build --release --bins -q
cargo build --release -q -p cocoon-tests --example bench_cri
target/release/examples/bench_cri "$RUNS"

#!/usr/bin/env bash
# Sets up the machine and runs every test: unit, property, agent-as-host-process and the
# end-to-end suites that boot the real guest under QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --workspace --bins
# Two test threads: each end-to-end test boots a TCG VM, and these machines have 2 cores.
cargo test --workspace -- --test-threads=2

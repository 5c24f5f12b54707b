#!/usr/bin/env bash
# Agent benchmark, each mode side by side in one process (see tests/examples/bench_agent.rs):
#   exec of `true` round trip vs a bare Health RPC on the same channel (medians of 30),
#   container stdout throughput through the agent to the host (256 MiB of zeros).
# Modes: host (the agent as a host process, needs root) and vm (QEMU; TCG here).
# Usage: scripts/bench-agent.sh [host|vm|both]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-both}

scripts/setup.sh >/dev/null
cargo build --release --bins -q
cargo build --release -q -p cocoon-tests --example bench_agent
BENCH=target/release/examples/bench_agent
case "$MODE" in
    host|vm) "$BENCH" "$MODE" ;;
    both) "$BENCH" host; "$BENCH" vm ;;
    *) echo "usage: $0 [host|vm|both]" >&2; exit 2 ;;
esac

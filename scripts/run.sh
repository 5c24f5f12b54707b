#!/usr/bin/env bash
# The main job on defaults: set up, build, start cocoond (the CRI runtime) unless one is
# already serving, and run a container of the built-in busybox test image in a pod VM
# through it with `cocoon run` (its output on stdout, its exit code ours). A daemon this
# script started is stopped at the end (its pods are removed first by --rm).
# Arguments after `--` replace the container's command.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --bins

SOCKET=${COCOON_SOCKET:-/run/cocoon/cocoon.sock}
bin=target/release
if ! "$bin/cocoon" --socket "$SOCKET" version >/dev/null 2>&1; then
    mkdir -p /run/cocoon
    log=/run/cocoon/cocoond.log
    "$bin/cocoond" --socket "$SOCKET" >>"$log" 2>&1 &
    daemon=$!
    trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
    for _ in $(seq 1 300); do
        "$bin/cocoon" --socket "$SOCKET" version >/dev/null 2>&1 && break
        kill -0 $daemon 2>/dev/null || { echo "run: cocoond failed to start; see $log" >&2; tail -5 "$log" >&2; exit 1; }
        sleep 0.1
    done
fi

if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then
    set -- sh -c 'echo "Hello from a Cocoon pod VM: $(uname -sr), $(nproc) vCPU, hostname $(hostname)"'
fi
"$bin/cocoon" --socket "$SOCKET" run --rm --name hello localhost/cocoon/test:latest -- "$@"

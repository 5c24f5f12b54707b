#!/usr/bin/env bash
# Boot benchmark, side by side in one run (this machine is noisy: compare, don't trust
# absolute numbers):
#   agent  — launch → agent ready (Health answered), split into VMM start / kernel boot /
#            agent init / handshake (cocoon vm boot)
#   trivial — the same kernel, the same QEMU command line, with a trivial init that
#            restarts the machine at once: launch → VMM exit (cocoon vm boot --no-agent)
#   vsock  — MB/s each way through the agent channel (64 MiB, SHA-256 verified)
# Usage: scripts/bench-boot.sh [runs=7] [transfer_mib=64]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
MIB=${2:-64}

scripts/setup.sh >/dev/null
cargo build --release --bins -q
COCOON=target/release/cocoon
IMAGE=target/guest-image

# The trivial init: busybox's reboot -f, i.e. reboot(RB_AUTOBOOT) → `reboot=t` → exit.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/dev"
cp /bin/busybox "$work/root/bin/busybox"
printf '#!/bin/busybox sh\nexec /bin/busybox reboot -f\n' >"$work/root/init"
chmod +x "$work/root/init"
(cd "$work/root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) >"$work/trivial.cpio"

python3 - "$COCOON" "$IMAGE" "$work/trivial.cpio" "$RUNS" "$MIB" <<'PY'
import json, statistics, subprocess, sys
cocoon, image, trivial, runs, mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def run(*extra):
    out = subprocess.run([cocoon, "vm", "boot", "--image-dir", image, "--json", *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])

agent, base = [], []
for i in range(runs):          # interleaved, so both see the same machine
    agent.append(run())
    base.append(run("--no-agent", "--initrd", trivial))
vsock = [run("--transfer-mib", str(mib)) for _ in range(3)]

med = lambda xs: statistics.median(xs)
p = lambda xs: f"{med(xs)*1000:.0f} ms (min {min(xs)*1000:.0f}, max {max(xs)*1000:.0f})"
print(f"accel: {agent[0]['accel']}, runs: {runs}")
for key, label in [("total_s", "launch → agent ready"), ("vmm_start_s", "  VMM start"),
                   ("kernel_boot_s", "  kernel boot"), ("agent_init_s", "  agent init"),
                   ("handshake_s", "  handshake")]:
    print(f"{label:24} {p([r[key] for r in agent])}")
b = [r["launch_to_exit_s"] for r in base]
print(f"{'trivial init → exit':24} {p(b)}")
ratio = med([r["total_s"] for r in agent]) / med(b)
print(f"{'ratio (agent/trivial)':24} {ratio:.2f}x   (goal ≤ 1.15x)")
up = med([r["host_to_guest_mb_s"] for r in vsock]); down = med([r["guest_to_host_mb_s"] for r in vsock])
print(f"vsock host→guest {up:.1f} MB/s, guest→host {down:.1f} MB/s (median of 3, {mib} MiB each)")
PY

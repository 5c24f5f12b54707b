#!/usr/bin/env bash
# The main job on defaults: set up, build, boot a pod VM from the built guest image,
# print what the guest reports and the boot timings, shut it down.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --bins
exec target/release/cocoon vm boot --image-dir target/guest-image "$@"

#!/usr/bin/env bash
# The main job on defaults: set up, build, boot a pod VM from the built guest image and
# run a container of the built-in busybox test image in it (its output on stdout), then
# shut the VM down. Arguments after `--` replace the container's command.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --bins
exec target/release/cocoon vm run --image-dir target/guest-image "$@"

#!/usr/bin/env bash
# Sets up a fresh Debian machine for Cocoon: system packages, then the guest image.
# Idempotent: installs only what is missing, and the guest image build is cached.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu-system-x86: the VMM on these machines; linux-source-6.1 and its build tools: our
# guest kernel; cpio: the initramfs; busybox-static: the trivial init of the boot bench
# and the rootfs of container tests; libseccomp-dev: seccomp for the agent's
# libcontainer (its libseccomp.a is linked into the static guest agent);
# protobuf-compiler: the CRI bindings' build script; libcap-ng-dev: virtiofsd (built by
# cargo below); docker-registry, umoci, skopeo: the loopback registry and the images the
# tests build and push to it.
PACKAGES=(
    qemu-system-x86 linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio
    xz-utils zstd kmod busybox-static python3 gcc make libseccomp-dev
    protobuf-compiler libcap-ng-dev docker-registry umoci skopeo
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "setup: system packages present"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi

# virtiofsd: the shared filesystem (container rootfs and volumes) of a pod VM. Debian 12
# does not package it; cargo builds it (~3 min on 2 cores) into ~/.cargo/bin.
VIRTIOFSD_VERSION=1.14.0
if ! command -v virtiofsd >/dev/null && [ ! -x "$HOME/.cargo/bin/virtiofsd" ]; then
    echo "setup: building virtiofsd $VIRTIOFSD_VERSION"
    cargo install --locked virtiofsd --version "$VIRTIOFSD_VERSION"
else
    echo "setup: virtiofsd present"
fi

echo "setup: building the guest image"
guest-image/build.sh

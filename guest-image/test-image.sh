#!/usr/bin/env bash
# Builds the built-in test image as an OCI image layout: Debian's busybox-static with
# its applets linked, `sh` as the default command. cocoond imports it at start as
# localhost/cocoon/test:latest, so `cocoon run` works on a machine without a registry;
# tests push it to their loopback registry. Needs umoci (scripts/setup.sh installs it).
# Usage: guest-image/test-image.sh LAYOUT_DIR [TAG]
set -euo pipefail

layout=${1:?usage: $0 LAYOUT_DIR [TAG]}
tag=${2:-latest}
busybox=${COCOON_TEST_BUSYBOX:-/bin/busybox}
command -v umoci >/dev/null || { echo "test-image: umoci not found (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$busybox" ] || { echo "test-image: no $busybox (install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$layout.tmp"
umoci init --layout "$layout.tmp"
umoci new --image "$layout.tmp:$tag"
umoci unpack --image "$layout.tmp:$tag" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
umoci repack --image "$layout.tmp:$tag" "$work/bundle" >/dev/null
umoci config --image "$layout.tmp:$tag" --author "Cocoon" \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.cmd sh --config.workingdir / >/dev/null
umoci gc --layout "$layout.tmp"
rm -rf "$layout"
mv "$layout.tmp" "$layout"
echo "test-image: $layout:$tag"

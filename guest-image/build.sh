#!/usr/bin/env bash
# Builds Cocoon's guest kernel and initramfs (/init = cocoon-agent).
# See guest-image/README.md. Usage:
#   guest-image/build.sh [--agent PATH] [--out DIR] [--kernel own|debian]
set -euo pipefail

# Bump when the kernel recipe changes in a way the hashed functions below do not show.
KERNEL_RECIPE_VERSION=1
# Bump when the initramfs layout changes.
INITRAMFS_LAYOUT_VERSION=2
# The built-in test image: Debian's busybox-static, a read-only container rootfs in the
# guest at /usr/share/cocoon/test-rootfs (what the container tests and demos run).
TEST_ROOTFS_BUSYBOX=/bin/busybox
# none | gzip. Under TCG an uncompressed image boots faster (measured: see README).
INITRAMFS_COMPRESSION=${COCOON_INITRAMFS_COMPRESSION:-none}

SRC_PKG=linux-source-6.1
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
SRC_TOP=linux-source-6.1
# Kernel source dirs never needed for an x86_64 build (kept out of the extraction).
SRC_EXCLUDE_ARCHES="alpha arc arm arm64 csky hexagon ia64 loongarch m68k microblaze mips
  nios2 openrisc parisc powerpc riscv s390 sh sparc um xtensa"
# Modules the Debian kernel path ships (dependencies are added from modules.dep).
DEBIAN_MODULES="virtio_mmio virtio_pci vmw_vsock_virtio_transport virtiofs overlay erofs
  virtio_blk virtio_net virtio_console virtio_rng"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
FRAGMENT="$SCRIPT_DIR/kernel.config"

log() { printf 'guest-image: %s\n' "$*"; }
die() { printf 'guest-image: error: %s\n' "$*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
sha256_str() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

usage() {
    cat <<EOF
usage: $0 [--agent PATH] [--out DIR] [--kernel own|debian]
  --agent PATH   static agent binary to install as /init (default: cargo build cocoon-agent)
  --out DIR      output directory (default: $REPO/target/guest-image)
  --kernel KIND  own (default: linux-source-6.1 + kernel.config, vmlinux) or
                 debian (installed linux-image-cloud-amd64, vmlinuz + modules)
cache: \${COCOON_CACHE_DIR:-\${XDG_CACHE_HOME:-\$HOME/.cache}/cocoon}/guest-image
EOF
}

AGENT=""
OUT="$REPO/target/guest-image"
KERNEL_KIND=own
CACHE=""
SRC_DIR=""

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --agent) [ $# -ge 2 ] || die "--agent needs a path"; AGENT=$2; shift 2 ;;
            --agent=*) AGENT=${1#*=}; shift ;;
            --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
            --out=*) OUT=${1#*=}; shift ;;
            --kernel) [ $# -ge 2 ] || die "--kernel needs own|debian"; KERNEL_KIND=$2; shift 2 ;;
            --kernel=*) KERNEL_KIND=${1#*=}; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
    case "$KERNEL_KIND" in own|debian) ;; *) die "--kernel must be own or debian, not '$KERNEL_KIND'" ;; esac
}

setup() {
    CACHE="${COCOON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cocoon}/guest-image"
    mkdir -p "$CACHE" "$OUT"
    OUT=$(cd "$OUT" && pwd)

    # One build at a time per cache (tests may call this concurrently).
    exec 9>"$CACHE/.lock"
    if ! flock -n 9; then
        log "waiting for the lock on $CACHE"
        flock 9
    fi

    export LC_ALL=C
    export SOURCE_DATE_EPOCH=0
    umask 022
    SRC_DIR="$CACHE/build/linux-6.1"
}

# ---------------------------------------------------------------------------------
# Agent
# ---------------------------------------------------------------------------------
resolve_agent() {
    if [ -z "$AGENT" ]; then
        log "agent: cargo build --release -p cocoon-agent --target x86_64-unknown-linux-gnu (static)"
        # libseccomp-sys links libseccomp.so unless told otherwise; a static-pie with a
        # DT_NEEDED entry and no interpreter jumps to address 0 on its first call into it.
        local seccomp_a
        seccomp_a=$(cc -print-file-name=libseccomp.a)
        (cd "$REPO" && export RUSTFLAGS='-C target-feature=+crt-static' \
            CARGO_TARGET_DIR="$REPO/target/guest" LIBSECCOMP_LINK_TYPE=static \
            && { [ "${seccomp_a#/}" = "$seccomp_a" ] || export LIBSECCOMP_LIB_PATH="${seccomp_a%/*}"; } \
            && cargo build --quiet --release -p cocoon-agent --target x86_64-unknown-linux-gnu) \
            || die "agent build failed"
        AGENT="$REPO/target/guest/x86_64-unknown-linux-gnu/release/cocoon-agent"
    fi
    [ -f "$AGENT" ] || die "agent binary not found: $AGENT"
    AGENT=$(readlink -f "$AGENT")
    if readelf -lW "$AGENT" 2>/dev/null | grep -q 'program interpreter'; then
        die "agent $AGENT is dynamically linked; /init must be static (RUSTFLAGS='-C target-feature=+crt-static')"
    fi
    if readelf -dW "$AGENT" 2>/dev/null | grep -q '(NEEDED)'; then
        die "agent $AGENT needs shared libraries ($(readelf -dW "$AGENT" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ')); link them statically"
    fi
    readelf -h "$AGENT" 2>/dev/null | grep -q 'Advanced Micro Devices X86-64' \
        || die "agent $AGENT is not an x86_64 ELF binary"
    AGENT_SHA=$(sha256 "$AGENT")
    log "agent: $AGENT sha256=${AGENT_SHA:0:16}"
}

# ---------------------------------------------------------------------------------
# Own kernel: linux-source-6.1 + tinyconfig + kernel.config
# ---------------------------------------------------------------------------------
extract_source() {
    local ver=$1
    if [ -f "$SRC_DIR/.cocoon-source" ] && [ "$(cat "$SRC_DIR/.cocoon-source")" = "$ver" ]; then
        return 0
    fi
    log "kernel: extracting $SRC_TARBALL ($SRC_PKG $ver) into $SRC_DIR"
    rm -rf "$SRC_DIR" "$SRC_DIR.tmp"
    mkdir -p "$SRC_DIR.tmp"
    local excl=(--exclude="$SRC_TOP/Documentation/*/*" --exclude="$SRC_TOP/tools/testing"
                --exclude="$SRC_TOP/tools/perf")
    local a
    # crypto/Kconfig sources every arch's crypto/Kconfig: keep arch/*/crypto only.
    for a in $SRC_EXCLUDE_ARCHES; do
        excl+=(--exclude="$SRC_TOP/arch/$a/[!c]*" --exclude="$SRC_TOP/arch/$a/c[!r]*")
    done
    tar -C "$SRC_DIR.tmp" -xJf "$SRC_TARBALL" --anchored "${excl[@]}" --strip-components=1 "$SRC_TOP"
    printf '%s\n' "$ver" > "$SRC_DIR.tmp/.cocoon-source"
    mv "$SRC_DIR.tmp" "$SRC_DIR"
}

# Fails naming every fragment option that did not end up in .config as written.
verify_config() {
    local frag=$1 cfg=$2 line sym want got bad=()
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            sym=${BASH_REMATCH[1]}; want=${BASH_REMATCH[2]}
            got=$(grep -E "^$sym=" "$cfg" | head -n1 | cut -d= -f2- || true)
            [ "$got" = "$want" ] || bad+=("$sym: wanted $want, got ${got:-not set}")
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            sym=${BASH_REMATCH[1]}
            got=$(grep -E "^$sym=" "$cfg" | head -n1 | cut -d= -f2- || true)
            [ -z "$got" ] || bad+=("$sym: wanted not set, got $got")
        fi
    done < "$frag"
    # Nothing may end up as a module: make vmlinux builds none and we ship none.
    while IFS= read -r line; do bad+=("$line (a module; set it =y or off)"); done \
        < <(grep -E '^CONFIG_[A-Za-z0-9_]+=m$' "$cfg" || true)
    if [ ${#bad[@]} -gt 0 ]; then
        printf 'guest-image: error: kernel config options dropped or changed by olddefconfig (a dependency is off?):\n' >&2
        printf 'guest-image:   %s\n' "${bad[@]}" >&2
        return 1
    fi
}

build_kernel() {
    local ver=$1 dest=$2
    extract_source "$ver"
    local mk=(make -C "$SRC_DIR" -s KBUILD_BUILD_TIMESTAMP=@0 KBUILD_BUILD_USER=cocoon
              KBUILD_BUILD_HOST=cocoon KBUILD_BUILD_VERSION=1)
    local logf="$CACHE/build/kernel-build.log"
    log "kernel: make tinyconfig + merge kernel.config + olddefconfig"
    {
        "${mk[@]}" tinyconfig
        (cd "$SRC_DIR" && ./scripts/kconfig/merge_config.sh -m .config "$FRAGMENT")
        "${mk[@]}" olddefconfig
    } > "$logf" 2>&1 || { tail -n 30 "$logf" >&2; die "kernel configuration failed (log: $logf)"; }
    verify_config "$FRAGMENT" "$SRC_DIR/.config" || die "fix guest-image/kernel.config"
    log "kernel: make -j$(nproc) vmlinux (log: $logf; ~6 min clean, seconds incremental)"
    "${mk[@]}" -j"$(nproc)" vmlinux >> "$logf" 2>&1 \
        || { tail -n 40 "$logf" >&2; die "kernel build failed (log: $logf)"; }
    readelf -nW "$SRC_DIR/vmlinux" | grep -q 'Xen.*0x00000012' \
        || die "vmlinux has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note"
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    cp "$SRC_DIR/vmlinux" "$dest.tmp/vmlinux"
    cp "$SRC_DIR/.config" "$dest.tmp/config"
    "${mk[@]}" kernelrelease > "$dest.tmp/release"
    sha256 "$dest.tmp/vmlinux" > "$dest.tmp/sha256"
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

own_kernel() {
    [ -f "$SRC_TARBALL" ] || die "$SRC_TARBALL missing (apt-get install $SRC_PKG)"
    local ver
    ver=$(dpkg-query -W -f='${Version}' "$SRC_PKG") || die "$SRC_PKG is not installed"
    local key
    key=$(sha256_str "recipe=$KERNEL_RECIPE_VERSION
src=$SRC_PKG $ver
cc=$(cc --version | head -n1)
fragment=$(cat "$FRAGMENT")
code=$(declare -f extract_source verify_config build_kernel)")
    KDIR="$CACHE/kernel/own-${key:0:32}"
    if [ -f "$KDIR/sha256" ]; then
        log "kernel: cached $KDIR"
    else
        build_kernel "$ver" "$KDIR"
        log "kernel: built $KDIR ($(stat -c %s "$KDIR/vmlinux") bytes)"
    fi
    KERNEL_FILE=vmlinux
    KERNEL_SOURCE="$SRC_PKG $ver (linux $(cat "$KDIR/release"))"
    KERNEL_SHA=$(cat "$KDIR/sha256")
    MODULES_KEY=none
}

# ---------------------------------------------------------------------------------
# Debian kernel: installed linux-image-cloud-amd64 + its modules in the initramfs
# ---------------------------------------------------------------------------------
debian_kernel() {
    local vmlinuz kver pkgver
    vmlinuz=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$vmlinuz" ] || die "no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)"
    kver=${vmlinuz#/boot/vmlinuz-}
    pkgver=$(dpkg-query -W -f='${Version}' "linux-image-$kver" 2>/dev/null || echo unknown)
    MODDIR=/lib/modules/$kver
    [ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing"
    log "kernel: debian $vmlinuz (linux-image-$kver $pkgver)"
    KDIR="$CACHE/kernel/debian-$kver-$pkgver"
    if [ -f "$KDIR/sha256" ] && cmp -s "$vmlinuz" "$KDIR/vmlinuz"; then
        log "kernel: cached $KDIR"
    else
        rm -rf "$KDIR.tmp"; mkdir -p "$KDIR.tmp"
        cp "$vmlinuz" "$KDIR.tmp/vmlinuz"
        sha256 "$KDIR.tmp/vmlinuz" > "$KDIR.tmp/sha256"
        rm -rf "$KDIR"; mv "$KDIR.tmp" "$KDIR"
        log "kernel: copied $vmlinuz into $KDIR"
    fi
    KERNEL_FILE=vmlinuz
    KERNEL_SOURCE="linux-image-$kver $pkgver"
    KERNEL_SHA=$(cat "$KDIR/sha256")

    # Resolve modules (dependencies first) from modules.dep.
    declare -gA MOD_SEEN=()
    MOD_ORDER=()
    local m
    for m in $DEBIAN_MODULES; do resolve_module "$m"; done
    MODULES_KEY=""
    local p
    for p in "${MOD_ORDER[@]}"; do MODULES_KEY+="$p $(sha256 "$MODDIR/$p")"$'\n'; done
    log "kernel: ${#MOD_ORDER[@]} modules: $(for p in "${MOD_ORDER[@]}"; do mod_name "$p"; echo; done | paste -sd' ')"
}

mod_name() { local b=${1##*/}; b=${b%%.ko*}; printf '%s' "$b"; }

resolve_module() {
    local name=$1 alt line rel deps d
    alt=${name//_/-}
    [ -z "${MOD_SEEN[${name//-/_}]:-}" ] || return 0
    MOD_SEEN[${name//-/_}]=1
    line=$(grep -E "/($name|$alt)\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -n1 || true)
    if [ -z "$line" ]; then
        if grep -qE "/($name|$alt)\.ko$" "$MODDIR/modules.builtin" 2>/dev/null; then
            log "kernel: module $name is built in"
            return 0
        fi
        die "module $name not found in $MODDIR/modules.dep"
    fi
    rel=${line%%:*}
    deps=${line#*:}
    for d in $deps; do resolve_module "$(mod_name "$d")"; done
    MOD_ORDER+=("$rel")
}

# ---------------------------------------------------------------------------------
# Initramfs (kernel's usr/gen_init_cpio: no root needed, device nodes from a list)
# ---------------------------------------------------------------------------------
# Sets GEN_INIT_CPIO to a host build of the kernel's usr/gen_init_cpio.
gen_init_cpio_tool() {
    local ver tool src
    ver=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) || die "$SRC_PKG is not installed"
    tool="$CACHE/tools/gen_init_cpio-$ver"
    if [ ! -x "$tool" ]; then
        mkdir -p "$CACHE/tools"
        src="$SRC_DIR/usr/gen_init_cpio.c"
        if [ ! -f "$SRC_DIR/.cocoon-source" ] || [ "$(cat "$SRC_DIR/.cocoon-source")" != "$ver" ]; then
            log "initramfs: extracting usr/gen_init_cpio.c from $SRC_TARBALL"
            tar -C "$CACHE/tools" -xJf "$SRC_TARBALL" --strip-components=2 "$SRC_TOP/usr/gen_init_cpio.c"
            src="$CACHE/tools/gen_init_cpio.c"
        fi
        cc -O2 -o "$tool.tmp" "$src"
        mv "$tool.tmp" "$tool"
    fi
    GEN_INIT_CPIO=$tool
}

build_initramfs() {
    local dest=$1 stage spec
    gen_init_cpio_tool
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    stage="$dest.tmp/stage"; mkdir -p "$stage"
    strip -o "$stage/init" "$AGENT"
    chmod 0755 "$stage/init"
    spec="$dest.tmp/cpio.list"
    {
        printf 'dir /dev 0755 0 0\n'
        printf 'nod /dev/console 0600 0 0 c 5 1\n'
        printf 'nod /dev/null 0666 0 0 c 1 3\n'
        printf 'dir /etc 0755 0 0\n'
        printf 'dir /etc/cocoon 0755 0 0\n'
        printf 'file /init %s 0755 0 0\n' "$stage/init"
        printf 'dir /lib 0755 0 0\n'
        printf 'dir /lib/modules 0755 0 0\n'
        printf 'dir /mnt 0755 0 0\n'
        printf 'dir /proc 0555 0 0\n'
        printf 'dir /run 0755 0 0\n'
        printf 'dir /sys 0555 0 0\n'
        printf 'dir /tmp 1777 0 0\n'
        local tr=/usr/share/cocoon/test-rootfs d a
        for d in /usr /usr/share /usr/share/cocoon $tr; do printf 'dir %s 0755 0 0\n' "$d"; done
        for d in bin proc sys dev tmp etc root; do printf 'dir %s/%s 0755 0 0\n' "$tr" "$d"; done
        printf 'file %s/bin/busybox %s 0755 0 0\n' "$tr" "$TEST_ROOTFS_BUSYBOX"
        for a in $("$TEST_ROOTFS_BUSYBOX" --list); do
            [ "$a" = busybox ] || printf 'slink %s/bin/%s busybox 0777 0 0\n' "$tr" "$a"
        done
        if [ "$KERNEL_KIND" = debian ]; then
            local p n f
            : > "$stage/modules.list"
            for p in "${MOD_ORDER[@]}"; do
                n=$(mod_name "$p"); f="$stage/$n.ko"
                case "$p" in
                    *.ko) cp "$MODDIR/$p" "$f" ;;
                    *.ko.xz) xz -dc "$MODDIR/$p" > "$f" ;;
                    *.ko.zst) zstd -qdc "$MODDIR/$p" > "$f" ;;
                    *.ko.gz) gzip -dc "$MODDIR/$p" > "$f" ;;
                    *) die "unknown module compression: $p" ;;
                esac
                printf 'file /lib/modules/%s.ko %s 0644 0 0\n' "$n" "$f"
                printf '/lib/modules/%s.ko\n' "$n" >> "$stage/modules.list"
            done
            printf 'file /etc/cocoon/modules.list %s 0644 0 0\n' "$stage/modules.list"
        fi
    } | sort -k2,2 > "$spec"
    # gen_init_cpio takes regular files' mtimes from disk; pin them.
    find "$stage" -type f -exec touch -h -d @0 {} +
    "$GEN_INIT_CPIO" -t 0 "$spec" > "$dest.tmp/initramfs.cpio"
    case "$INITRAMFS_COMPRESSION" in
        none) mv "$dest.tmp/initramfs.cpio" "$dest.tmp/initramfs.img" ;;
        gzip) gzip -n -9 -c "$dest.tmp/initramfs.cpio" > "$dest.tmp/initramfs.img"
              rm "$dest.tmp/initramfs.cpio" ;;
        *) die "bad INITRAMFS_COMPRESSION" ;;
    esac
    sha256 "$stage/init" > "$dest.tmp/agent-stripped.sha256"
    sha256 "$dest.tmp/initramfs.img" > "$dest.tmp/sha256"
    rm -rf "$stage"
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

# ---------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------
make_initramfs() {
    IKEY=$(sha256_str "layout=$INITRAMFS_LAYOUT_VERSION
compression=$INITRAMFS_COMPRESSION
kind=$KERNEL_KIND
tool=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null || true)
agent=$AGENT_SHA
busybox=$(sha256 "$TEST_ROOTFS_BUSYBOX")
modules=$MODULES_KEY
code=$(declare -f build_initramfs)")
    IDIR="$CACHE/initramfs/${IKEY:0:32}"
    if [ -f "$IDIR/sha256" ]; then
        log "initramfs: cached $IDIR"
    else
        log "initramfs: building ($INITRAMFS_COMPRESSION) into $IDIR"
        build_initramfs "$IDIR"
        log "initramfs: built $IDIR ($(stat -c %s "$IDIR/initramfs.img") bytes)"
    fi
    INITRAMFS_SHA=$(cat "$IDIR/sha256")
}

# Install into the out dir: copy (atomically) only what differs.
install_file() {
    local src=$1 dst=$2
    if cmp -s "$src" "$dst"; then return 0; fi
    cp "$src" "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"
    log "out: wrote $dst"
}
install_out() {
    install_file "$KDIR/$KERNEL_FILE" "$OUT/$KERNEL_FILE"
    install_file "$IDIR/initramfs.img" "$OUT/initramfs.img"
    if [ "$KERNEL_KIND" = own ]; then
        install_file "$KDIR/config" "$OUT/kernel.config"
        rm -f "$OUT/vmlinuz"
    else
        rm -f "$OUT/vmlinux" "$OUT/kernel.config"
    fi
    {
        printf 'kernel_kind=%s\n' "$KERNEL_KIND"
        printf 'kernel_file=%s\n' "$KERNEL_FILE"
        printf 'kernel_source=%s\n' "$KERNEL_SOURCE"
        printf 'kernel_sha256=%s\n' "$KERNEL_SHA"
        printf 'initramfs_file=initramfs.img\n'
        printf 'initramfs_compression=%s\n' "$INITRAMFS_COMPRESSION"
        printf 'initramfs_sha256=%s\n' "$INITRAMFS_SHA"
        printf 'agent_sha256=%s\n' "$AGENT_SHA"
        printf 'agent_stripped_sha256=%s\n' "$(cat "$IDIR/agent-stripped.sha256")"
    } > "$OUT/manifest.txt.tmp.$$"
    if cmp -s "$OUT/manifest.txt.tmp.$$" "$OUT/manifest.txt"; then
        rm -f "$OUT/manifest.txt.tmp.$$"
    else
        mv -f "$OUT/manifest.txt.tmp.$$" "$OUT/manifest.txt"
        log "out: wrote $OUT/manifest.txt"
    fi
    log "done: $OUT/$KERNEL_FILE $OUT/initramfs.img"
}

main() {
    parse_args "$@"
    setup
    resolve_agent
    if [ "$KERNEL_KIND" = own ]; then own_kernel; else debian_kernel; fi
    make_initramfs
    install_out
    # The built-in container image for cocoond (an OCI layout of the same busybox).
    "$SCRIPT_DIR/test-image.sh" "$OUT/test-image" >/dev/null
    log "done: $OUT/test-image"
}

# Everything above is a definition and `exit` sits on the line that runs main: bash has
# read all it will ever execute before the build starts, so editing this script during a
# (long) build cannot derail the running one.
main "$@"; exit $?
